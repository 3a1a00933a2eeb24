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

from glmv_cli.kernels import contiguous_rows


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


@functools.cache
def _add_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def add_rms_norm(a_ptr, x_ptr, w1_ptr, w2_ptr, r_ptr, y_ptr, D, eps1, eps2, stride_a, stride_x, stride_r,
                     stride_y, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        ok = cols < D
        dt = y_ptr.dtype.element_ty
        a = tl.load(a_ptr + row * stride_a + cols, mask=ok, other=0.0).to(tl.float32)
        inv = 1.0 / tl.sqrt(tl.sum(a * a, axis=0) / D + eps1)
        w1 = tl.load(w1_ptr + cols, mask=ok, other=0.0).to(tl.float32)
        branch = (w1 * (a * inv).to(dt).to(tl.float32)).to(dt).to(tl.float32)  # norm1(a), rounded as torch does
        x = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
        r = (x + branch).to(dt)  # the residual sum, in the activation dtype
        tl.store(r_ptr + row * stride_r + cols, r, mask=ok)
        r32 = r.to(tl.float32)
        inv2 = 1.0 / tl.sqrt(tl.sum(r32 * r32, axis=0) / D + eps2)
        w2 = tl.load(w2_ptr + cols, mask=ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * stride_y + cols, (w2 * (r32 * inv2).to(dt).to(tl.float32)).to(dt), mask=ok)

    return add_rms_norm, triton.next_power_of_2


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (..., D), weight (D,) of x's dtype -> (..., D) in x's dtype."""
    D = x.shape[-1]
    x2 = contiguous_rows(x, D)
    y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    kernel, next_pow2 = _kernel()
    block = next_pow2(D)
    kernel[(x2.shape[0],)](x2, weight, y, D, eps, x2.stride(0), y.stride(0), BLOCK=block,
                           num_warps=8 if block >= 2048 else 4)
    return y.view(x.shape)


def add_rms_norm(a: torch.Tensor, x: torch.Tensor, w1: torch.Tensor, eps1: float, w2: torch.Tensor,
                 eps2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's sandwich seam in one kernel: r = x + norm1(a), y = norm2(r), each rounded
    where torch rounds (no FMA may merge a product into the sum). a, x (..., D); w1, w2 (D,) of
    their dtype -> (r, y), both (..., D). Three kernels (norm, add, norm) become one."""
    D = x.shape[-1]
    a2, x2 = contiguous_rows(a, D), contiguous_rows(x, D)
    r, y = torch.empty(x2.shape, dtype=x.dtype, device=x.device), torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    kernel, next_pow2 = _add_kernel()
    block = next_pow2(D)
    kernel[(x2.shape[0],)](a2, x2, w1, w2, r, y, D, eps1, eps2, a2.stride(0), x2.stride(0), r.stride(0), y.stride(0),
                           BLOCK=block, num_warps=8 if block >= 2048 else 4, enable_fp_fusion=False)
    return r.view(x.shape), y.view(x.shape)
