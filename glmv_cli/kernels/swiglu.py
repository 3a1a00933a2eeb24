"""The decoder MLP's activation in one Triton kernel: up * silu(gate) from the fused gate_up output.

    y = to_dtype(up * to_dtype(gate * sigmoid(gate)))      gate, up = gate_up[..., :I], gate_up[..., I:]

In torch that is two kernels per layer (silu, then the product; the split is a view), each
rounding its result to the activation dtype; here one, with the same two roundings. The sigmoid
is Triton's (exp and division may differ from torch's in the last bit of float32, so a rare
bfloat16 result can differ by one unit). Used on CUDA for the few rows of a decode step.
"""

from __future__ import annotations

import functools

import torch

from glmv_cli.kernels import contiguous_rows


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def swiglu(x_ptr, y_ptr, width, stride_x, stride_y, BLOCK: tl.constexpr):
        row, block = tl.program_id(0), tl.program_id(1)
        cols = block * BLOCK + tl.arange(0, BLOCK)
        ok = cols < width
        dt = y_ptr.dtype.element_ty
        gate = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
        up = tl.load(x_ptr + row * stride_x + width + cols, mask=ok, other=0.0).to(tl.float32)
        act = (gate / (1.0 + tl.exp(-gate))).to(dt).to(tl.float32)
        tl.store(y_ptr + row * stride_y + cols, (up * act).to(dt), mask=ok)

    return swiglu, triton.cdiv


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up (..., 2I), gate first -> up * silu(gate) (..., I) in gate_up's dtype."""
    two_i = gate_up.shape[-1]
    x = contiguous_rows(gate_up, two_i)
    y = torch.empty(x.shape[0], two_i // 2, dtype=x.dtype, device=x.device)
    kernel, cdiv = _kernel()
    block = 1024
    kernel[(x.shape[0], cdiv(two_i // 2, block))](x, y, two_i // 2, x.stride(0), y.stride(0), BLOCK=block,
                                                  num_warps=4, enable_fp_fusion=False)
    return y.view(*gate_up.shape[:-1], two_i // 2)
