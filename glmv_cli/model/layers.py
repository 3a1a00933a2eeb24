"""Small layers shared by the vision tower and the text decoder."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from glmv_cli.kernels import triton_compiles


class Embedding(nn.Embedding):
    """nn.Embedding without its random draw on the meta device, where loading builds the model:
    there torch's normal_ runs through its decompositions, whose first use imports torch._dynamo,
    a second of every glmv process's start for nothing (the checkpoint overwrites the rows)."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()


class RMSNorm(nn.Module):
    """weight * x / rms(x), the normalisation computed in float32 and cast back before the weight."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernels_for(x) and x.dtype == self.weight.dtype and not needs_grad(x, self.weight):
            from glmv_cli.kernels.rms_norm import rms_norm

            return rms_norm(x, self.weight, self.eps)  # one kernel instead of eight, same rounding
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)


def add_norm(branch: torch.Tensor, residual: torch.Tensor, branch_norm: RMSNorm,
             next_norm: RMSNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(residual + branch_norm(branch), next_norm of that sum): where a sandwich layer's branch
    rejoins the residual stream and the next norm reads it. One Triton kernel on CUDA (same
    rounding as the three operations), else the operations themselves."""
    weights = (branch_norm.weight, next_norm.weight)
    if (kernels_for(residual) and branch.dtype == residual.dtype == weights[0].dtype == weights[1].dtype
            and not needs_grad(branch, residual, *weights)):
        from glmv_cli.kernels.rms_norm import add_rms_norm

        return add_rms_norm(branch, residual, weights[0], branch_norm.eps, weights[1], next_norm.eps)
    x = residual + branch_norm(branch)
    return x, next_norm(x)


def needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def kernels_for(t: torch.Tensor) -> bool:
    """Whether our Triton kernels handle this tensor: CUDA ones, where fused_kernels() allows and
    Triton compiles their dtype (triton_compiles); and, while Triton's CPU interpreter is on
    (TRITON_INTERPRET=1), CPU ones too: that is how the tests run the model's kernel wiring end to
    end without a GPU."""
    if t.is_cuda:
        return fused_kernels() and triton_compiles(t.dtype, t.device)
    return t.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1" and fused_kernels()


def fused_kernels() -> bool:
    """Our Triton kernels on CUDA: where Triton is installed, unless GLMV_TRITON=0, and not while
    torch.compile traces (--compile): inductor then fuses the plain torch code itself."""
    if torch.compiler.is_compiling():
        return False
    from glmv_cli.kernels.int8_gemv import available

    return os.environ.get("GLMV_TRITON", "1") != "0" and available()


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) with separate gate/up weights and no biases (the key names of
    the vision blocks and the patch merger)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
