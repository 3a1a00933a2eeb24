"""RMSNorm in one Triton kernel, rounding exactly where the reference does.

    y = weight * to_dtype(x32 * rsqrt(mean(x32^2) + eps)),   x32 = float32(x)

In plain torch that is eight operations (two casts, pow, mean, add, rsqrt, two products), each a
kernel on a GPU; a GLM-4.1V decoder layer has four of these norms ("sandwich" norms), so at
batch 1 they were about half of the kernels a decoded token launches. Here one program handles
one row: it loads the row, reduces in float32, rounds the normalised row to the output dtype (as
the reference does before the weight), multiplies by the weight in float32 and rounds once more,
as torch's own elementwise product of two low-precision tensors does.

Used on CUDA when Triton is there (models/layers.py); tested against the torch expression in
Triton's CPU interpreter.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def rms_norm(x_ptr, w_ptr, y_ptr, D, eps, stride_x, stride_y, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        ok = cols < D
        x = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
        inv = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / D + eps)
        normed = (x * inv).to(y_ptr.dtype.element_ty).to(tl.float32)  # the reference rounds here
        w = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * stride_y + cols, (w * normed).to(y_ptr.dtype.element_ty), mask=ok)

    return rms_norm, triton.next_power_of_2


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (..., D), weight (D,) of x's dtype -> (..., D) in x's dtype."""
    D = x.shape[-1]
    x2 = x.reshape(-1, D)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    kernel, next_pow2 = _kernel()
    block = next_pow2(D)
    kernel[(x2.shape[0],)](x2, weight, y, D, eps, x2.stride(0), y.stride(0), BLOCK=block,
                           num_warps=8 if block >= 2048 else 4)
    return y.view(x.shape)
