"""Hand-written GPU kernels (Triton), each with a plain-torch equivalent it is tested against."""

from __future__ import annotations

import torch


def contiguous_rows(t: torch.Tensor, width: int) -> torch.Tensor:
    """t (..., width) as a 2-D (rows, width) view whose last dimension is contiguous (a copy only
    where it is not), the layout a row-per-program kernel reads."""
    rows = t.reshape(-1, width)
    return rows if rows.stride(-1) == 1 else rows.contiguous()
