"""What this machine can move: copy bandwidth and weight-read bandwidth (a matrix-vector product
over a matrix far larger than the caches), the ceilings for batch-1 decoding."""

from __future__ import annotations

import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _best(fn, device, repeats: int) -> float:
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """GB/s of a large tensor copy, counting bytes read plus bytes written."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    seconds = _best(lambda: dst.copy_(src), device, repeats)
    return 2 * nbytes / seconds / 1e9


def weight_read_bandwidth(device: torch.device, dtype: torch.dtype, nbytes: int = 1 << 30,
                          repeats: int = 5) -> float:
    """GB/s at which a matrix-vector product of this dtype streams its matrix (what decoding does)."""
    cols = 4096
    rows = nbytes // (cols * torch.empty((), dtype=dtype).element_size())
    weight = torch.randn(rows, cols, device=device).to(dtype) if device.type == "cuda" else \
        torch.empty(rows, cols, dtype=dtype).normal_()
    vector = torch.randn(1, cols, device=device, dtype=dtype)
    seconds = _best(lambda: torch.nn.functional.linear(vector, weight), device, repeats)
    return weight.numel() * weight.element_size() / seconds / 1e9
