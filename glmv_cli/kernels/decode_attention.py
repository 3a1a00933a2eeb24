"""Attention of one decoded token over the KV cache, split along the cache ("flash decoding").

    o[b, h, g] = softmax(q[b, h, g] . k[b, h, :]^T * scale + mask) @ v[b, h, :]

The decode step folds each group's G query heads into the rows of one query against its key/value
head (text.py), so for GLM-4.1V-9B attention is 2 key/value heads x 16 rows over the whole cache.
torch's scaled_dot_product_attention gives each (batch, head) one program: 2 programs reading
the whole cache. Here the cache is cut into BLOCK_L-key pieces, one program each (a partial
softmax: its maximum, its sum and its unnormalised output), and a second kernel merges the pieces.

Not the default yet: benchmarks/decode_profile.py times it against torch's on the GPU, where the
choice will be made. Needs G >= 16 (the matrix units' smallest tile) on a GPU.
"""

from __future__ import annotations

import functools
import math

import torch

from glmv_cli.kernels import triton_compiles

BLOCK_L = 128  # cache positions per program


@functools.cache
def _kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def partial(q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, m_ptr, l_ptr, L, KV, sq_b, sq_h, sk_b, sk_h, sk_s, scale,
                G: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr, PRECISION: tl.constexpr):
        bh, split = tl.program_id(0), tl.program_id(1)
        splits = tl.num_programs(1)
        b, h = bh // KV, bh % KV
        rows, cols = tl.arange(0, G), tl.arange(0, D)
        keys = split * BLOCK + tl.arange(0, BLOCK)
        valid = keys < L
        q = tl.load(q_ptr + b * sq_b + h * sq_h + rows[:, None] * D + cols[None, :])  # (G, D)
        kv_at = b * sk_b + h * sk_h + keys[:, None] * sk_s + cols[None, :]
        k = tl.load(k_ptr + kv_at, mask=valid[:, None], other=0.0)  # (BLOCK, D)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # (G, BLOCK), float32
        bias = tl.load(mask_ptr + keys, mask=valid, other=float("-inf")).to(tl.float32)
        s = s + bias[None, :]
        m = tl.max(s, axis=1)  # (G,)
        m_safe = tl.where(m == float("-inf"), 0.0, m)  # a piece with every key masked adds nothing
        p = tl.exp(s - m_safe[:, None])
        v = tl.load(v_ptr + kv_at, mask=valid[:, None], other=0.0)  # (BLOCK, D)
        o = tl.dot(p.to(v.dtype), v, input_precision=PRECISION)  # (G, D), float32
        at = bh * splits + split
        tl.store(o_ptr + at * G * D + rows[:, None] * D + cols[None, :], o)
        tl.store(m_ptr + at * G + rows, m)
        tl.store(l_ptr + at * G + rows, tl.sum(p, axis=1))

    @triton.jit
    def merge(o_ptr, m_ptr, l_ptr, out_ptr, SPLITS, G: tl.constexpr, D: tl.constexpr, SPLITS_P2: tl.constexpr):
        bh = tl.program_id(0)
        pieces, rows, cols = tl.arange(0, SPLITS_P2), tl.arange(0, G), tl.arange(0, D)
        used = pieces < SPLITS
        at = bh * SPLITS + pieces  # (P,)
        m = tl.load(m_ptr + at[:, None] * G + rows[None, :], mask=used[:, None], other=float("-inf"))  # (P, G)
        top = tl.max(m, axis=0)  # (G,)
        w = tl.where(m == float("-inf"), 0.0, tl.exp(m - top[None, :]))  # (P, G)
        sums = tl.load(l_ptr + at[:, None] * G + rows[None, :], mask=used[:, None], other=0.0)
        total = tl.sum(w * sums, axis=0)  # (G,)
        acc = tl.zeros((G, D), dtype=tl.float32)
        for i in range(0, SPLITS):
            mi = tl.load(m_ptr + (bh * SPLITS + i) * G + rows)  # (G,)
            wi = tl.where(mi == float("-inf"), 0.0, tl.exp(mi - top))
            oi = tl.load(o_ptr + (bh * SPLITS + i) * G * D + rows[:, None] * D + cols[None, :])
            acc += wi[:, None] * oi
        out = acc / total[:, None]
        tl.store(out_ptr + bh * G * D + rows[:, None] * D + cols[None, :], out.to(out_ptr.dtype.element_ty))

    return partial, merge, triton.next_power_of_2


def supported(q: torch.Tensor) -> bool:
    """Shapes the kernel takes: G and D powers of two, G >= 16 on a GPU (tl.dot's smallest tile)."""
    _, _, G, D = q.shape
    pow2 = G & (G - 1) == 0 and D & (D - 1) == 0
    return pow2 and D >= 16 and (G >= 16 or not q.is_cuda) and (not q.is_cuda or triton_compiles(q.dtype, q.device))


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q (B, KV, G, D) contiguous; k, v (B, KV, L, D) with a contiguous last dimension (the cache);
    mask (..., L) additive (0 / -inf), one row for all -> (B, KV, G, D) in q's dtype."""
    B, KV, G, D = q.shape
    L = k.shape[2]
    q = q.contiguous()
    mask = mask.reshape(-1)[-L:].contiguous()
    splits = -(-L // BLOCK_L)
    o = torch.empty(B * KV, splits, G, D, dtype=torch.float32, device=q.device)
    m = torch.empty(B * KV, splits, G, dtype=torch.float32, device=q.device)
    l_sum = torch.empty_like(m)
    out = torch.empty_like(q)
    partial, merge, next_pow2 = _kernels()
    partial[(B * KV, splits)](q, k, v, mask, o, m, l_sum, L, KV, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
                              k.stride(2), 1.0 / math.sqrt(D), G=G, D=D, BLOCK=BLOCK_L, num_warps=4,
                              PRECISION="ieee" if q.dtype == torch.float32 else "tf32")  # (float32: no TF32)
    merge[(B * KV,)](o, m, l_sum, out, splits, G=G, D=D, SPLITS_P2=next_pow2(splits), num_warps=4)
    return out
