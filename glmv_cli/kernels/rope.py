"""The text decoder's rotary embedding for q and k together, in one Triton kernel, which in the
decode step also writes k and v into the KV cache.

    y[..., 2i]   = x[2i] * cos_i - x[2i+1] * sin_i        for 2i < R (rotary_dim)
    y[..., 2i+1] = x[2i+1] * cos_i + x[2i] * sin_i
    y[..., R:]   = x[R:]

rope.apply_text_rope does this in about seven operations (slices, a negation, a stack, two
products, a sum, a concatenation), each a kernel on a GPU, and the cache update adds three more
(the positions, two index_copy_). Here one program handles one head of one position, reading it
straight from the fused q/k/v projection's output (B, S, heads, D): a q head is rotated into q
(B, H, S, D), the layout attention wants; a k head is rotated into the k cache, a v head copied
into the v cache, at the position read from a device tensor (so a CUDA graph replays it).
Products and the sum are rounded to the activation dtype where torch rounds them (each elementwise
operation of low-precision tensors computes in float32 and rounds its result), and the compiler
may not fuse a product and the sum into one FMA (`enable_fp_fusion=False`; on an H200 the fused
float32 kernel differed from torch in the last bit of 12% of the elements), so the result equals
the torch expression.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def rope(x_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, v_ptr, start_ptr, S, H, KV, sx_b, sx_s, sx_h, sc_b, sc_s,
             sq_b, sq_h, sq_s, sk_b, sk_h, sk_s, D: tl.constexpr, R: tl.constexpr, BLOCK_D: tl.constexpr):
        pid = tl.program_id(0)
        NH = H + 2 * KV
        h, s, b = pid % NH, (pid // NH) % S, pid // (NH * S)
        d = tl.arange(0, BLOCK_D)
        ok, rot = d < D, d < R
        base = x_ptr + b * sx_b + s * sx_s + h * sx_h
        x = tl.load(base + d, mask=ok, other=0.0)
        dt = q_ptr.dtype.element_ty
        if h < H + KV:  # q and k heads rotate
            partner = tl.load(base + (d ^ 1), mask=rot, other=0.0).to(tl.float32)
            c = tl.load(cos_ptr + b * sc_b + s * sc_s + d, mask=rot, other=1.0).to(tl.float32)
            sn = tl.load(sin_ptr + b * sc_b + s * sc_s + d, mask=rot, other=0.0).to(tl.float32)
            rotated = tl.where(d % 2 == 0, -partner, partner)
            first = (x.to(tl.float32) * c).to(dt).to(tl.float32)
            second = (rotated * sn).to(dt).to(tl.float32)
            y = tl.where(rot, (first + second).to(dt), x.to(dt))
            if h < H:
                tl.store(q_ptr + b * sq_b + h * sq_h + s * sq_s + d, y, mask=ok)
            else:
                at = tl.load(start_ptr) + s  # the token's cache position
                tl.store(k_ptr + b * sk_b + (h - H) * sk_h + at * sk_s + d, y, mask=ok)
        else:  # v heads go to the cache as they are
            at = tl.load(start_ptr) + s
            tl.store(v_ptr + b * sk_b + (h - H - KV) * sk_h + at * sk_s + d, x.to(dt), mask=ok)

    return rope, triton.next_power_of_2


def _launch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
            v: torch.Tensor, start: torch.Tensor, heads: int, kv_heads: int) -> None:
    B, S, NH, D = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    cos, sin = cos.contiguous(), sin.contiguous()
    kernel, next_pow2 = _kernel()
    kernel[(B * S * NH,)](x, cos, sin, q, k, v, start, S, heads, kv_heads, x.stride(0), x.stride(1), x.stride(2),
                          cos.stride(0), cos.stride(1), q.stride(0), q.stride(1), q.stride(2), k.stride(0),
                          k.stride(1), k.stride(2), D=D, R=cos.shape[-1], BLOCK_D=next_pow2(D), num_warps=1,
                          enable_fp_fusion=False)


def rope_heads(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, S, NH, D) (any strides, last dim contiguous); cos/sin (B, S, R) of x's dtype ->
    every head rotated, (B, NH, S, D), contiguous."""
    B, S, NH, D = x.shape
    y = torch.empty(B, NH, S, D, dtype=x.dtype, device=x.device)
    _launch(x, cos, sin, y, y, y, _no_position(x.device), NH, 0)  # no k or v heads: never read
    return y


@functools.cache
def _no_position(device: torch.device) -> torch.Tensor:
    """A position tensor for launches without k/v heads (made once, not a fill kernel a call)."""
    return torch.zeros(1, dtype=torch.long, device=device)


def rope_into_cache(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                    v_cache: torch.Tensor, start: torch.Tensor, num_heads: int, num_kv_heads: int) -> torch.Tensor:
    """The decode step's attention input in one kernel: q/k/v heads from the fused projection
    (B, S, H + 2 KV, D) -> rotated q (B, H, S, D); the rotated k and the v written into the caches
    (B, KV, max_len, D) at positions start[0] + [0, S), `start` a device tensor (no host sync).
    Replaces the rotation, the position arithmetic and two index_copy_ (five launches per layer)."""
    B, S, _, D = qkv.shape
    q = torch.empty(B, num_heads, S, D, dtype=qkv.dtype, device=qkv.device)
    _launch(qkv, cos, sin, q, k_cache, v_cache, start, num_heads, num_kv_heads)
    return q
