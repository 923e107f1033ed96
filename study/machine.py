"""What machine produced a number: on CPU the last digits depend on the CPU model, the BLAS and the thread
count, so every run records them (and a reproduction elsewhere knows what it compares against)."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def blas() -> str | None:
    try:
        cfg = torch.__config__.show().lower()
    except Exception:  # noqa: BLE001 - informational only
        return None
    return next((w for w in ("OpenBLAS", "MKL", "BLIS", "Accelerate") if w.lower() in cfg), None)


def machine_record() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "blas": blas(),
            "cpu": f"{cpu_model()} ({platform.machine()})", "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
