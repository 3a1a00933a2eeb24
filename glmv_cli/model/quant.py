"""Weight-only int8: a quarter of float32's bytes (half of bfloat16's) read per generated token.

Each output channel (row) of a weight gets one symmetric scale, s = max|w_row| / 127, and stores
q = round(w / s) in int8; y = (x @ q^T) * s (+ bias). Activations stay in the model's dtype.
On CPU the product runs in torch's int8 weight-packed kernel (`_weight_int8pack_mm`, bfloat16
activations: its float32 path is several times slower). On CUDA a decode step's few rows go through
a Triton kernel that reads the int8 matrix once (glmv_cli/kernels/int8_gemv.py); a prompt's many
rows, and devices without Triton, use a dequantizing F.linear (a GEMM, bound by arithmetic).

Quantized: every linear layer of the text decoder and the LM head, which is where batch-1 decoding
spends its bandwidth, and the token embedding (Int8Embedding: a row and its scale per token). On an
accelerator also the vision tower's linear layers, so that GLM-4.1V-9B fits a 12 GB card (in
bfloat16 they are 1.8 of its 11.8 GB; on a CPU they stay in the model's dtype, where its float32
GEMMs are faster than the int8 kernel's bfloat16 path). Convolutions and norms are never quantized.
`--quantize int4` puts the text decoder's linear layers in int4 instead (model/quant_int4.py).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from glmv_cli.kernels import int8_gemv
from glmv_cli.model.layers import kernels_for

CPU_GEMM_ROWS = 320  # from this many activation rows on, a CPU with native bfloat16 dequantizes and runs a GEMM


@functools.cache
def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), so that its bfloat16 GEMMs
    outrun torch's int8 weight-packed kernel on a prompt (2-3x on an AVX512-BF16 EPYC); elsewhere
    bfloat16 goes through float32 and the int8 kernel stays."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float -> (int8 (N, K), float32 scales (N,)) with weight ~= q * scales[:, None]."""
    w = weight.to(torch.float32, copy=True)  # worked on in place below, never the caller's tensor
    # (amax and amin apart: torch.aminmax is 7x slower on a CPU, 18 ms against 2.7 for 8192x2048)
    high, low = w.amax(dim=1), w.amin(dim=1)
    scales = torch.maximum(high, -low).clamp(min=1e-12) / 127.0  # (N,): max |w| per row
    # in place: the float copy is the one temporary of the matrix's size (loading quantizes large
    # blocks on the GPU, where these temporaries would add to the peak memory)
    q = w.div_(scales[:, None]).round_().clamp_(-127, 127).to(torch.int8)
    return q, scales


class Int8Linear(nn.Module):
    """A drop-in for nn.Linear holding an int8 weight and per-row scales (buffers, not parameters)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=None, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.empty(out_features, dtype=dtype or torch.float32, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device)) if bias else None

    @classmethod
    def like(cls, linear: nn.Linear) -> Int8Linear:
        w = linear.weight
        return cls(linear.in_features, linear.out_features, linear.bias is not None, dtype=w.dtype, device=w.device)

    def set_rows(self, start: int, weight: torch.Tensor) -> None:
        """Quantize float rows [start, start + len(weight)) of the weight into this layer (loading
        goes block by block, so no whole float copy of a large matrix is ever held)."""
        q, scales = quantize_int8(weight)
        self.weight[start:start + q.shape[0]] = q
        self.scales[start:start + q.shape[0]] = scales.to(self.scales.dtype)

    def ready(self) -> None:
        """After the last rows: on CPU keep the scales in bfloat16, the kernel's own input type
        (converting them on every call would also break inductor's lowering of the kernel)."""
        if self.weight.device.type == "cpu":
            self.scales = self.scales.to(torch.bfloat16)

    def set_weight(self, weight: torch.Tensor) -> None:
        """Quantize a whole float weight into this layer."""
        self.set_rows(0, weight)
        self.ready()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        if kernels_for(x) and x2.shape[0] <= int8_gemv.MAX_ROWS:
            return int8_gemv.int8_gemv(x2, self.weight, self.scales, self.bias).view(*lead, self.out_features)
        if x.device.type == "cpu" and x2.shape[0] >= CPU_GEMM_ROWS and native_bfloat16():
            # a prompt's many rows: bfloat16 GEMMs run 2-3x faster than the int8 kernel there, which
            # pays for dequantizing the weight (4096x4096, 2048 rows, 2 cores: 91 ms against 190)
            w = self.weight.to(torch.bfloat16).mul_(self.scales.to(torch.bfloat16)[:, None])
            y = F.linear(x2.to(torch.bfloat16), w).to(x.dtype)
        elif x.device.type == "cpu":
            y = torch._weight_int8pack_mm(x2.to(torch.bfloat16), self.weight, self.scales.to(torch.bfloat16))
            y = y.to(x.dtype)
        else:
            y = F.linear(x2, self.weight.to(x.dtype)).mul_(self.scales.to(x.dtype))  # (in place: a long
            # prompt's output is hundreds of MB, and a second one would add to the GPU's peak)
        if self.bias is not None:
            y = y.add_(self.bias)
        return y.view(*lead, self.out_features)


class Int8Embedding(nn.Module):
    """A drop-in for nn.Embedding holding int8 rows and one scale per row."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=None, device=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.dtype = num_embeddings, embedding_dim, dtype or torch.float32
        self.register_buffer("weight", torch.empty(num_embeddings, embedding_dim, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.empty(num_embeddings, dtype=torch.float32, device=device))

    @classmethod
    def like(cls, embedding: nn.Embedding) -> Int8Embedding:
        w = embedding.weight
        return cls(embedding.num_embeddings, embedding.embedding_dim, dtype=w.dtype, device=w.device)

    def set_rows(self, start: int, weight: torch.Tensor) -> None:
        q, scales = quantize_int8(weight)
        self.weight[start:start + q.shape[0]] = q
        self.scales[start:start + q.shape[0]] = scales

    def ready(self) -> None:
        pass

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.weight).to(self.dtype)  # (..., D)
        return rows * self.scales[ids].to(self.dtype)[..., None]


def quantizable(model: nn.Module, vision: bool = False) -> list[str]:
    """Names of the layers int8 applies to: the text decoder's linear layers, the LM head and the
    token embedding; with `vision`, the vision tower's linear layers too."""
    names = []
    for name, m in model.named_modules():
        text = name == "lm_head" or name.startswith("model.language_model.")
        if isinstance(m, nn.Linear) and (text or (vision and name.startswith("model.visual."))):
            names.append(name)
        elif isinstance(m, nn.Embedding) and text:
            names.append(name)
    return names


def swap_quantized(model: nn.Module, scheme: str = "int8", vision: bool = False) -> list[str]:
    """Replace those layers by empty Int8Linear / Int8Embedding modules (works on the meta device);
    their names. With scheme "int4", the text decoder's linear layers become Int4Linear instead where
    their shape allows (model/quant_int4.py); the LM head, the embedding and the vision tower stay int8
    (load_model asks for the vision tower with int4 on every device)."""
    from glmv_cli.model.quant_int4 import Int4Linear, group_size

    names = quantizable(model, vision)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = getattr(parent, child)
        group = group_size(layer.in_features, layer.out_features) if isinstance(layer, nn.Linear) else None
        if scheme == "int4" and group and name.startswith("model.language_model.layers."):
            setattr(parent, child, Int4Linear.like(layer, group))
        else:
            setattr(parent, child, (Int8Embedding if isinstance(layer, nn.Embedding) else Int8Linear).like(layer))
    return names
