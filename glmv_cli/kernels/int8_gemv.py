"""Weight-only int8 matrix-vector product for decoding on CUDA, as one Triton kernel.

    y[m, n] = (sum_k x[m, k] * q[n, k]) * scale[n] (+ bias[n])     for the few rows m of a decode step

Batch-1 decoding reads every weight once per token, so the product is bound by the bytes of `q`:
int8 moves half of bfloat16's. The dequantizing `F.linear(x, q.to(bf16)) * s` that runs elsewhere
first writes (and then reads) a bfloat16 copy of the whole matrix, three times the bytes of the
product itself, which made int8 3.5x *slower* than bfloat16 on an H200. Here each program streams
BLOCK_N rows of `q` in BLOCK_K-byte pieces (16-byte loads per thread), converts them in registers,
accumulates in float32 and writes BLOCK_N outputs with the scale and bias applied: the matrix is
read once and nothing else of its size is touched.

Triton ships with CUDA builds of torch; `available()` says whether this process can use it.
The kernel also runs in Triton's CPU interpreter (TRITON_INTERPRET=1, set before this module is
imported), which is how the tests check its arithmetic on a machine without a GPU.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os

import torch

MAX_ROWS = 8  # more activation rows (a prompt) are a GEMM: dequantize and use the tensor cores


@functools.cache
def available() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def int8_gemv(x_ptr, q_ptr, s_ptr, b_ptr, y_ptr, N, K, stride_xm, stride_qn, stride_ym,
                  HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_n, m = tl.program_id(0), tl.program_id(1)
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        row_ok = rows < N
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)  # (BLOCK_K,)
            col_ok = cols < K
            x = tl.load(x_ptr + m * stride_xm + cols, mask=col_ok, other=0.0).to(tl.float32)
            q = tl.load(q_ptr + rows[:, None] * stride_qn + cols[None, :], mask=row_ok[:, None] & col_ok[None, :],
                        other=0)  # (BLOCK_N, BLOCK_K) int8
            acc += tl.sum(q.to(tl.float32) * x[None, :], axis=1)
        y = acc * tl.load(s_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        if HAS_BIAS:
            y += tl.load(b_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + m * stride_ym + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)

    return int8_gemv, triton.cdiv


def block_sizes(n: int, k: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps). A GEMV is bound by how many bytes are in flight: an H200
    needs tens of KB per multiprocessor. The first version (16 x 256 bytes per program) reached
    16% of the bandwidth on GLM-4.1V-9B's shapes: its 8 warps per SM held 8 KB in flight. Here each
    program reads 8 KB per iteration (64 bytes per thread, four 16-byte loads), in 4 rows where
    the matrix has few rows (q/k/v, o: more programs), 8 where it has many (gate/up, down)."""
    block_k = min(2048 if n <= 8192 else 1024, max(16, 1 << (k - 1).bit_length()))
    block_n = 4 if n <= 8192 else 8
    return block_n, block_k, 4


# Tried on each shape's first product on a GPU (a few ms; Triton keeps the compiled kernels on
# disk), so a card where block_sizes guesses wrong still gets its fastest of these
TUNE_CANDIDATES = [(4, 2048, 4), (8, 1024, 4), (8, 512, 4), (16, 256, 4), (2, 2048, 2)]
# ... and these besides in benchmarks/decode_profile.py, which times every one on the model's shapes
CANDIDATES = [*TUNE_CANDIDATES, (4, 1024, 4), (8, 2048, 8), (16, 1024, 8), (32, 256, 4)]
TUNED: dict[tuple, tuple[int, int, int]] = {}  # (N, K, dtype, device) -> the config measured fastest
log = logging.getLogger(__name__)


def tuned_config(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None,
                 candidates=None, timer=None) -> tuple[int, int, int]:
    """The block shape for this product: measured once per shape on CUDA (not while a CUDA graph
    is being captured, nor with GLMV_INT8_TUNE=0: then block_sizes' guess)."""
    N, K = q.shape
    return measured_config(TUNED, (N, K, x.dtype, x.device), lambda: block_sizes(N, K),
                           candidates or TUNE_CANDIDATES, lambda c: _launch(x, q, scales, bias, c), x, timer,
                           f"int8 GEMV {N}x{K}")


def measured_config(table: dict, key: tuple, guess, candidates, run, x: torch.Tensor, timer=None,
                    label: str = "GEMV") -> tuple[int, int, int]:
    """table[key], else the fastest of guess() and `candidates` as `run(config)` measures them on
    CUDA (kept in `table`), else guess(): on a CPU, while a CUDA graph is being captured, or with
    GLMV_INT8_TUNE=0. Shared by the int8 and int4 kernels."""
    if key in table:
        return table[key]
    first = guess()
    if timer is None:
        if not x.is_cuda or torch.cuda.is_current_stream_capturing() or os.environ.get("GLMV_INT8_TUNE") == "0":
            return first
        timer = _cuda_time
    configs = list(dict.fromkeys([first, *candidates]))
    times = {c: timer(lambda c=c: run(c)) for c in configs}
    table[key] = min(configs, key=times.get)
    log.info("%s: blocks %s (%s)", label, table[key], ", ".join(f"{c}: {1000 * t:.1f} us" for c, t in times.items()))
    return table[key]


def _cuda_time(run, reps: int = 5) -> float:
    """Best milliseconds of `run()`, the L2 cache flushed before each (a 37 MB matrix fits in an
    H200's 50 MB L2: timing it warm would rank the configurations by cache reads)."""
    flush = _flush_buffer(torch.cuda.current_device())
    run()  # compiles
    best = float("inf")
    for _ in range(reps):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end))
    return best


@functools.cache
def _flush_buffer(device: int) -> torch.Tensor:
    return torch.empty(128 * 2**20, dtype=torch.uint8, device=device)


def int8_gemv(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None,
              config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """x (M, K) float, q (N, K) int8 contiguous, scales (N,), bias (N,) or None -> y (M, N) in x's
    dtype. `config`: (BLOCK_N, BLOCK_K, num_warps) instead of the tuned one."""
    x = x.contiguous()
    q = q if q.stride(1) == 1 else q.contiguous()
    return _launch(x, q, scales, bias, config or tuned_config(x, q, scales, bias))


def _launch(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None,
            config: tuple[int, int, int]) -> torch.Tensor:
    M, K = x.shape
    N = q.shape[0]
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    kernel, cdiv = _kernel()
    block_n, block_k, warps = config
    kernel[(cdiv(N, block_n), M)](x, q, scales, bias if bias is not None else scales, y, N, K, x.stride(0),
                                  q.stride(0), y.stride(0), HAS_BIAS=bias is not None, BLOCK_N=block_n,
                                  BLOCK_K=block_k, num_warps=warps)
    return y
