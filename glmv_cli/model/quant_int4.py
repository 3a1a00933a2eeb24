"""Weight-only int4: an eighth of float32's bytes (a quarter of bfloat16's) read per generated token.

Each group of GROUP consecutive inputs of an output channel (row) gets a scale and a zero point,
asymmetric: w ~= (q - 8) * s + z with q in 0..15, s = (max - min) / 15, z = min + 8 * s (rounding
to nearest, no calibration data: what runs on any checkpoint at load time). Two values share a
byte. GLM-4.1V-9B's decoder layers then take 4.3 GB instead of 16.3 GB in bfloat16, so the model
fits an 8 GB card or laptop, and a bandwidth-bound decode step reads half of int8's bytes.

On a CPU the product runs in torch's int4 weight-packed kernel (`_weight_int4pack_mm_for_cpu`,
bfloat16 activations: its float32 path is 50x slower), the weight repacked into its layout once
loaded; a prompt's many rows, where the CPU has native bfloat16, read the codes back out of that
layout into a dequantized bfloat16 GEMM (as int8 does, quant.py). Elsewhere the weight stays as
loaded: a decode step's few rows go through a Triton kernel that reads the packed bytes once
(glmv_cli/kernels/int4_gemv.py); a prompt's many rows, and devices without Triton, dequantize and
run F.linear (a GEMM, bound by arithmetic).

Only the text decoder's linear layers take int4 (where batch-1 decoding spends its bandwidth); the
LM head and the token embedding stay int8 (`--quantize int4` is int8 there), as most int4 schemes
keep the output layer wider, and so do the vision tower's linear layers, on a CPU too (int8 keeps
them in the model's dtype there, for speed; int4 is for fitting: 0.9 GB less for GLM-4.1V-9B). A
layer whose shape the kernels cannot take stays int8 (quant.py).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from glmv_cli.kernels import int4_gemv
from glmv_cli.model.layers import kernels_for
from glmv_cli.model.quant import CPU_GEMM_ROWS, native_bfloat16

GROUPS = (128, 64, 32)  # the group size: the largest of these dividing the layer's inputs
CPU_ROW_BLOCK = 1024  # rows repacked at a time on a CPU (its layout is local to blocks of 64 rows on AVX-512)


def group_size(in_features: int, out_features: int) -> int | None:
    """The group size for a layer of this shape, None where int4 cannot take it (the CPU kernel
    packs rows in blocks of 16)."""
    if out_features % 16:
        return None
    return next((g for g in GROUPS if in_features % g == 0), None)


def scale_dtype(device: torch.device | str, dtype: torch.dtype) -> torch.dtype:
    """The scales' dtype: bfloat16 on a CPU, the kernel's own; elsewhere the model's."""
    return torch.bfloat16 if torch.device(device).type == "cpu" else dtype


def quantize_int4(weight: torch.Tensor, group: int, dtype: torch.dtype = torch.float32
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float -> (uint8 (N, K/2): q[2j] in the low nibble of byte j, q[2j+1] in the high;
    scales (N, K/group, 2) in `dtype`: s and z of each group), w ~= (q - 8) * s + z. The codes are
    rounded against s and z as stored in `dtype`, so they are the nearest the stored scales allow."""
    N, K = weight.shape
    w = weight.to(torch.float32, copy=True).view(N, K // group, group)  # worked on in place below
    low, high = w.amin(dim=2), w.amax(dim=2)
    s = ((high - low) / 15).clamp(min=max(1e-12, torch.finfo(dtype).tiny)).to(dtype)  # (a constant group:
    # a step that float16 still holds, so no code divides by zero)
    z = (low + 8 * s.float()).to(dtype)
    q = w.sub_(z.float()[..., None]).div_(s.float()[..., None]).add_(8).round_().clamp_(0, 15).to(torch.uint8)
    q = q.view(N, K)
    return q[:, 0::2] | (q[:, 1::2] << 4), torch.stack([s, z], dim=-1)


def codes(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (N, K/2) -> the 4-bit codes (N, K) as uint8."""
    return torch.stack([packed & 15, packed >> 4], dim=-1).reshape(packed.shape[0], -1)


def dequantize_int4(packed: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The (N, K) weight the codes and scales stand for, in `dtype`."""
    N, groups = scales.shape[:2]
    w = codes(packed).to(dtype).view(N, groups, -1)  # in place from here: one float matrix at a time
    # (a prompt dequantizes GLM-4.1V-9B's gate/up weights, 224 MB in bfloat16, on every layer)
    w.sub_(8).mul_(scales[..., 0, None].to(dtype)).add_(scales[..., 1, None].to(dtype))
    return w.view(N, -1)


def unpack_cpu_layout(packed: torch.Tensor, block: int) -> torch.Tensor:
    """The codes (N, K) uint8 of a weight in torch's CPU int4 layout: per block of `block` rows, K
    runs of block/2 bytes, byte d of run k holding row d's code k (low nibble) and row d + block/2's
    (high). N must be a multiple of `block` (see cpu_block)."""
    N, K = packed.shape[0], 2 * packed.shape[1]
    runs = packed.reshape(N // block, K, block // 2)
    return torch.cat([runs & 15, runs >> 4], dim=2).transpose(1, 2).reshape(N, K)


def pack_cpu_layout(codes: torch.Tensor, block: int) -> torch.Tensor:
    """codes (N, K) uint8 -> torch's CPU int4 layout (N, K/2) uint8, the inverse of
    unpack_cpu_layout: what `_convert_weight_to_int4pack_for_cpu` writes, 3x faster (it wants the
    codes as int32 first)."""
    N, K = codes.shape
    runs = codes.view(N // block, block, K)
    half = block // 2
    return (runs[:, :half] | (runs[:, half:] << 4)).transpose(1, 2).reshape(N, K // 2)


@functools.cache
def cpu_block() -> int | None:
    """The row block of torch's CPU int4 layout on this machine (64 with AVX-512), found by packing
    a probe and reading it back; None where no guess reads back (the layout is the kernel's own and
    may change with the CPU or torch): then prompts stay in the kernel."""
    g = torch.Generator().manual_seed(0)
    for block in (64, 32, 16):
        probe = torch.randint(0, 16, (2 * block, 64), generator=g, dtype=torch.int32)
        try:
            packed = torch._convert_weight_to_int4pack_for_cpu(probe, 1)
        except RuntimeError:
            return None
        if packed.shape == (2 * block, 32) and torch.equal(unpack_cpu_layout(packed, block).to(torch.int32), probe):
            return block
    return None


class Int4Linear(nn.Module):
    """A drop-in for nn.Linear holding packed int4 codes and per-group scales (buffers)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=None, device=None,
                 group: int = 128):
        super().__init__()
        self.in_features, self.out_features, self.group = in_features, out_features, group
        self.cpu_layout = False  # True once ready() repacked the codes for the CPU kernel
        self.register_buffer("weight", torch.empty(out_features, in_features // 2, dtype=torch.uint8, device=device))
        self.register_buffer("scales", torch.empty(out_features, in_features // group, 2, dtype=dtype or torch.float32,
                                                   device=device))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device)) if bias else None

    @classmethod
    def like(cls, linear: nn.Linear, group: int) -> Int4Linear:
        w = linear.weight
        return cls(linear.in_features, linear.out_features, linear.bias is not None, dtype=w.dtype, device=w.device,
                   group=group)

    def set_rows(self, start: int, weight: torch.Tensor) -> None:
        """Quantize float rows [start, start + len(weight)) into this layer (loading goes block by
        block, so no whole float copy of a large matrix is ever held)."""
        packed, scales = quantize_int4(weight, self.group, self.scales.dtype)
        self.weight[start:start + packed.shape[0]] = packed
        self.scales[start:start + packed.shape[0]] = scales

    def ready(self) -> None:
        """After the last rows: on a CPU, repack into the CPU kernel's layout (same bytes), a block
        of rows at a time, and lay the scales out as it reads them ((K/group, N, 2))."""
        if self.weight.device.type != "cpu" or self.cpu_layout:
            return
        block = cpu_block()  # (CPU_ROW_BLOCK is a multiple of every block it may find)
        for start in range(0, self.out_features, CPU_ROW_BLOCK):
            rows = self.weight[start:start + CPU_ROW_BLOCK]
            if block and self.out_features % block == 0:
                rows.copy_(pack_cpu_layout(codes(rows), block))
            else:
                rows.copy_(torch._convert_weight_to_int4pack_for_cpu(codes(rows).to(torch.int32), 1))
        self.scales = self.scales.transpose(0, 1).to(torch.bfloat16).contiguous()
        self.cpu_layout = True

    def set_weight(self, weight: torch.Tensor) -> None:
        """Quantize a whole float weight into this layer."""
        self.set_rows(0, weight)
        self.ready()

    def readable_on_cpu(self) -> bool:
        """Whether a prompt runs faster as a dequantized bfloat16 GEMM here, and the codes can be
        read back out of the CPU layout."""
        block = cpu_block()
        return native_bfloat16() and block is not None and self.out_features % block == 0

    def dequantized_from_cpu_layout(self) -> torch.Tensor:
        """The (N, K) bfloat16 weight, from the codes in the CPU kernel's layout (in place after
        the unpacking: one bfloat16 matrix)."""
        w = unpack_cpu_layout(self.weight, cpu_block()).to(torch.bfloat16).view(self.out_features, -1, self.group)
        s, z = self.scales[..., 0].t(), self.scales[..., 1].t()  # (N, K/group): the scales are (K/group, N, 2)
        return w.sub_(8).mul_(s[..., None]).add_(z[..., None]).view(self.out_features, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        if self.cpu_layout:
            if x2.shape[0] >= CPU_GEMM_ROWS and self.readable_on_cpu():
                y = F.linear(x2.to(torch.bfloat16), self.dequantized_from_cpu_layout())
            else:
                y = torch._weight_int4pack_mm_for_cpu(x2.to(torch.bfloat16), self.weight, self.group, self.scales)
            y = y.to(x.dtype)
            if self.bias is not None:
                y = y.add_(self.bias)
        elif kernels_for(x) and x2.shape[0] <= int4_gemv.MAX_ROWS and int4_gemv.usable():
            y = int4_gemv.int4_gemv_or_none(x2, self.weight, self.scales, self.bias)
            if y is None:  # the kernel failed to build here (logged once): the dequantizing product
                y = F.linear(x2, dequantize_int4(self.weight, self.scales, x.dtype), self.bias)
        else:
            y = F.linear(x2, dequantize_int4(self.weight, self.scales, x.dtype), self.bias)
        return y.view(*lead, self.out_features)
