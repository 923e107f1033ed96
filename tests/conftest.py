"""Shared test helpers: is a real SLURM usable here, and polling with a deadline."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests import helpers_jobs and this module by name


def slurm_unusable() -> str | None:
    """Why the real-SLURM tests cannot run here, or None."""
    for exe in ("sbatch", "srun", "sacct", "squeue", "scontrol"):
        if shutil.which(exe) is None:
            return f"no `{exe}` on PATH (start one with: bash scripts/slurm.sh start)"
    for cmd in (["sinfo", "-h", "-o", "%T"], ["sacct", "-n", "-X", "-j", "1"]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
        except (subprocess.SubprocessError, OSError) as e:
            return f"`{' '.join(cmd)}` failed: {e}"
        if r.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {r.stderr.strip()[:200]} (bash scripts/slurm.sh start)"
    return None


def wait_for(cond, timeout_s: float, what: str, every: float = 0.1):
    """Poll ``cond`` until it returns something truthy (returned), or fail saying what never happened."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
