"""Peak FLOP/s for model-FLOPs utilisation: the datasheet for known accelerators, a measurement otherwise."""

from __future__ import annotations

import functools
import time

import torch

# dense (no sparsity) peak TFLOP/s by device-name fragment; bf16 and tf32/fp32 tensor-core rates
DATASHEET_TFLOPS = {
    "H200": {torch.bfloat16: 989.0, torch.float32: 494.0},
    "H100": {torch.bfloat16: 989.0, torch.float32: 494.0},
    "A100": {torch.bfloat16: 312.0, torch.float32: 156.0},
    "L40S": {torch.bfloat16: 362.0, torch.float32: 183.0},
    "A10": {torch.bfloat16: 125.0, torch.float32: 62.5},
}


@functools.lru_cache(maxsize=8)
def measured_matmul_flops(device: str, dtype: torch.dtype, n: int = 1024, seconds: float = 0.3) -> float:
    """Best sustained FLOP/s of square matmuls: the honest 'peak' on a CPU, where no datasheet applies."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        (a @ b).sum().item()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for frag, table in DATASHEET_TFLOPS.items():
            if frag in name and dtype in table:
                return table[dtype] * 1e12
    return measured_matmul_flops(device.type, dtype)
