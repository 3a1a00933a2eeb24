"""Rotary position embeddings: the text decoder's partial interleaved M-RoPE and the vision tower's
2D RoPE.

Text (GLM-4.1V): only the first `rotary_dim` (= head_dim * partial_rotary_factor) dims of each head
rotate, and they rotate in *adjacent pairs* (2i, 2i+1) with frequency i (GPT-J style). The
rotary_dim/2 frequencies are split by `mrope_section` = [t, h, w]: the first take their angle from
the temporal position row, the next from the height row, the last from the width row.

Vision: head_dim/4 frequencies per axis; angles for (h, w) concatenated and repeated twice fill the
whole head, rotated with the half-split `rotate_half` (NeoX style), in float32.
"""

from __future__ import annotations

import torch


def inverse_frequencies(dim: int, theta: float) -> torch.Tensor:
    """(dim/2,) float32: theta^(-2i/dim), on the default device. Computed on the CPU and moved:
    under a meta device context torch.arange runs through torch's decompositions, whose first use
    imports torch._dynamo (a second of every glmv process's start)."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim))
    return freqs.to(torch.get_default_device())


def text_rope(position_ids: torch.Tensor, inv_freq: torch.Tensor, mrope_section: tuple[int, ...],
              dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """3D positions (3, B, S) -> cos, sin (B, S, rotary_dim), cast to the activation dtype."""
    freqs = position_ids[..., None].float() * inv_freq.float()  # (3, B, S, F)
    parts = freqs.split(list(mrope_section), dim=-1)
    angles = torch.cat([part[axis] for axis, part in enumerate(parts)], dim=-1)  # (B, S, F)
    angles = angles.repeat_interleave(2, dim=-1)  # (B, S, 2F): [f0, f0, f1, f1, ...]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_text_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, S, D); cos/sin (B, S, R) with R <= D. Rotates x[..., :R] in adjacent pairs."""
    rot_dim = cos.shape[-1]
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, S, R)
    x_rot, x_pass = x[..., :rot_dim], x[..., rot_dim:]
    even, odd = x_rot[..., 0::2], x_rot[..., 1::2]
    rotated = torch.stack((-odd, even), dim=-1).flatten(-2)  # (B, H, S, R)
    return torch.cat([x_rot * cos + rotated * sin, x_pass], dim=-1)


def vision_rope(hw_positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch (h, w) positions (N, 2) -> float32 cos, sin (N, head_dim)."""
    freqs = hw_positions[..., None].float() * inv_freq  # (N, 2, head_dim/4)
    angles = freqs.flatten(1)  # (N, head_dim/2): h frequencies then w frequencies
    angles = torch.cat([angles, angles], dim=-1)  # (N, head_dim)
    return angles.cos(), angles.sin()


def apply_vision_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (N, H, D); cos/sin (N, D) float32. Half-split rotation computed in float32."""
    dtype = x.dtype
    x = x.float()
    cos, sin = cos[:, None], sin[:, None]  # (N, 1, D)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(dtype)
