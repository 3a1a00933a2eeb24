"""Weight-only int4 matrix-vector product for decoding on CUDA, as one Triton kernel.

    y[m, n] = sum_g ( s[n, g] * sum_{k in g} (q[n, k] - 8) * x[m, k]  +  z[n, g] * sum_{k in g} x[m, k] )

with the codes q packed two to a byte (q[2j] low nibble, q[2j+1] high; model/quant_int4.py) and
per-group scales (N, K/G, 2) holding s and z. As in int8_gemv.py, each program streams BLOCK_N rows
of the packed matrix in BLOCK_K-column pieces (BLOCK_K/2 bytes), unpacks the nibbles in registers
and accumulates in float32, so the matrix is read once and nothing of its size is written: a
decode step reads a quarter of bfloat16's bytes. A piece covers whole groups, so each group's
scale and zero point are applied to its partial sum, not to every product.

Runs in Triton's CPU interpreter too (TRITON_INTERPRET=1), which is how the tests check it.
"""

from __future__ import annotations

import functools
import logging

import torch

from glmv_cli.kernels.int8_gemv import available, measured_config  # noqa: F401  (available: re-exported)

log = logging.getLogger(__name__)
MAX_ROWS = 8  # more activation rows (a prompt) are a GEMM: dequantize and use the tensor cores


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def int4_gemv(x_ptr, q_ptr, s_ptr, b_ptr, y_ptr, N, K, stride_xm, stride_qn, stride_sn, stride_ym,
                  HAS_BIAS: tl.constexpr, GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_n, m = tl.program_id(0), tl.program_id(1)
        HALF: tl.constexpr = BLOCK_K // 2
        GROUPS: tl.constexpr = BLOCK_K // GROUP
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        row_ok = rows < N
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            pairs = k0 // 2 + tl.arange(0, HALF)  # (HALF,) byte columns
            pair_ok = pairs < K // 2
            x_even = tl.load(x_ptr + m * stride_xm + 2 * pairs, mask=pair_ok, other=0.0).to(tl.float32)
            x_odd = tl.load(x_ptr + m * stride_xm + 2 * pairs + 1, mask=pair_ok, other=0.0).to(tl.float32)
            b = tl.load(q_ptr + rows[:, None] * stride_qn + pairs[None, :], mask=row_ok[:, None] & pair_ok[None, :],
                        other=136)  # (BLOCK_N, HALF) uint8; 136 = 0x88: both codes 8, i.e. zero
            low = (b & 15).to(tl.float32) - 8.0
            high = (b >> 4).to(tl.float32) - 8.0
            part = tl.sum(tl.reshape(low * x_even[None, :] + high * x_odd[None, :], (BLOCK_N, GROUPS, GROUP // 2)), 2)
            x_sum = tl.sum(tl.reshape(x_even + x_odd, (GROUPS, GROUP // 2)), 1)  # (GROUPS,)
            groups = k0 // GROUP + tl.arange(0, GROUPS)
            s_at = s_ptr + rows[:, None] * stride_sn + groups[None, :] * 2
            g_ok = row_ok[:, None] & (groups < K // GROUP)[None, :]
            s = tl.load(s_at, mask=g_ok, other=0.0).to(tl.float32)  # (BLOCK_N, GROUPS)
            z = tl.load(s_at + 1, mask=g_ok, other=0.0).to(tl.float32)
            acc += tl.sum(s * part + z * x_sum[None, :], 1)
        y = acc
        if HAS_BIAS:
            y += tl.load(b_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + m * stride_ym + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)

    return int4_gemv, triton.cdiv


def block_sizes(n: int, k: int, group: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps): 4 KB of codes in flight per program and iteration (half of
    int8_gemv's 8 KB, for as many columns), whole groups per piece."""
    block_k = max(group, min(4096 if n <= 8192 else 2048, 1 << (k - 1).bit_length()))
    return (4 if n <= 8192 else 8), block_k, 4


CANDIDATES = [(4, 4096, 4), (8, 2048, 4), (8, 1024, 4), (16, 512, 4), (2, 4096, 2)]
TUNED: dict[tuple, tuple[int, int, int]] = {}


def tuned_config(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None,
                 group: int) -> tuple[int, int, int]:
    """The block shape for this product, chosen as int8's is (int8_gemv.measured_config), among the
    candidates whose pieces hold whole groups."""
    N, K = q.shape[0], 2 * q.shape[1]
    return measured_config(TUNED, (N, K, group, x.dtype, x.device), lambda: block_sizes(N, K, group),
                           [c for c in CANDIDATES if c[1] % group == 0],
                           lambda c: _launch(x, q, scales, bias, group, c), x, label=f"int4 GEMV {N}x{K}")


def int4_gemv(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None,
              config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """x (M, K) float, q (N, K/2) uint8, scales (N, K/G, 2), bias (N,) or None -> y (M, N) in x's
    dtype. `config`: (BLOCK_N, BLOCK_K, num_warps) instead of the tuned one (BLOCK_K a multiple of G)."""
    x = x.contiguous()
    q, scales = q.contiguous(), scales.contiguous()
    group = 2 * q.shape[1] // scales.shape[1]
    return _launch(x, q, scales, bias, group, config or tuned_config(x, q, scales, bias, group))


_FAILED: list[str] = []  # why the kernel could not run in this process, once it could not


def usable() -> bool:
    return not _FAILED


def int4_gemv_or_none(x, q, scales, bias=None) -> torch.Tensor | None:
    """int4_gemv, or None (and never again in this process) where the kernel fails to compile or
    launch: it has not yet run on every GPU and Triton version, and a slower answer beats none.
    Out-of-memory errors still propagate (they are the request's, not the kernel's)."""
    try:
        return int4_gemv(x, q, scales, bias)
    except Exception as e:  # noqa: BLE001  (Triton's compile errors have no common base class)
        from glmv_cli.memory import is_out_of_memory

        if is_out_of_memory(e) or (x.is_cuda and torch.cuda.is_current_stream_capturing()):
            raise
        _FAILED.append(f"{type(e).__name__}: {e}")
        log.warning("the int4 Triton kernel failed (%s); int4 products dequantize instead, which is slower",
                    _FAILED[0].splitlines()[0][:300])
        return None


def _launch(x, q, scales, bias, group: int, config: tuple[int, int, int]) -> torch.Tensor:
    M, K = x.shape
    N = q.shape[0]
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    kernel, cdiv = _kernel()
    block_n, block_k, warps = config
    kernel[(cdiv(N, block_n), M)](x, q, scales, bias if bias is not None else scales, y, N, K, x.stride(0),
                                  q.stride(0), scales.stride(0), y.stride(0), HAS_BIAS=bias is not None,
                                  GROUP=group, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps)
    return y
