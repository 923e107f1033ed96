"""What produced a number: library versions, the git commit, the device."""

from __future__ import annotations

import os
from pathlib import Path

import torch



# ------------------------------------------------------------------------------------------ provenance
def versions() -> dict[str, str | None]:
    import importlib.metadata as md
    import platform

    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("lm_eval", "numpy", "datasets", "tokenizers", "deepspeed"):
        try:
            out[dist] = md.version(dist.replace("_", "-"))
        except md.PackageNotFoundError:
            out[dist] = None
    out["git"] = _git_commit()
    return out


def _git_commit() -> str | None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        res = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return os.environ.get("LOOPMDM_GIT_COMMIT")
    return res.stdout.strip() or None if res.returncode == 0 else os.environ.get("LOOPMDM_GIT_COMMIT")


def device_name(device: torch.device) -> str:
    """What ran the numbers, e.g. 'cuda:NVIDIA H100 80GB HBM3' or 'cpu:AMD EPYC 7B13 (x86_64)'."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import platform

    from study.machine import cpu_model

    return f"cpu:{cpu_model()} ({platform.machine()})"
