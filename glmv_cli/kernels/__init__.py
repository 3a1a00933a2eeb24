"""Hand-written GPU kernels (Triton), each with a plain-torch equivalent it is tested against."""

from __future__ import annotations

import functools

import torch


def contiguous_rows(t: torch.Tensor, width: int) -> torch.Tensor:
    """t (..., width) as a 2-D (rows, width) view whose last dimension is contiguous (a copy only
    where it is not), the layout a row-per-program kernel reads."""
    rows = t.reshape(-1, width)
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def triton_compiles(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether Triton compiles kernels of this dtype for this CUDA device. Triton needs compute
    capability 7.0 (a P100 or a GTX 10xx has 6.x), and bfloat16 needs 8.0 (Ampere) or later: on a
    T4, a V100, an RTX 20xx or a GTX 16xx ptxas refuses it ("Feature '.bf16' requires .target sm_80
    or higher"). Where it does not, the tensor takes torch's path."""
    capability = cuda_capability(device)
    return capability >= (7, 0) and (dtype != torch.bfloat16 or capability >= (8, 0))


@functools.cache
def cuda_capability(device: torch.device) -> tuple[int, int]:
    return tuple(torch.cuda.get_device_capability(device))
