"""The GLM-4.1V vision tower: patch rows -> one LLM embedding per 2x2 block of patches.

patch embed (Conv3d with kernel == stride, computed as one matmul) -> RMSNorm -> + learned absolute
position table bicubic-resampled to each image's grid -> `depth` blocks of 2D-RoPE attention and
SwiGLU MLP -> RMSNorm -> 2x2 downsample (Conv2d, also one matmul) -> patch merger.

Attention never crosses an image or a video's frame pair: every (h*w)-patch slice is a segment,
and runs of equal-length segments go through SDPA as one batch. No S x S mask is ever built.

Rows arrive block-major (the 4 patches of a merge block consecutive, blocks row-major), which is
what lets the downsample read each block as a contiguous (2, 2) window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmv_cli.model import work
from glmv_cli.model.config import VisionConfig
from glmv_cli.model.layers import Embedding, RMSNorm, SwiGLU
from glmv_cli.model.patch_codes import PatchCodes, patch_rows
from glmv_cli.model.rope import apply_vision_rope, inverse_frequencies, vision_rope

# patches the tower takes at a time (patch_groups): 1.3 images of 1120x1120 (6,400 patches each),
# 330-410 MB of activations in GLM-4.1V-9B's tower, and rows enough to keep its matrix products large
GROUP_PATCHES = 8192


def block_major_positions(grid_thw: list[tuple[int, int, int]], merge: int) -> torch.Tensor:
    """(h, w) patch coordinates in the processor's row order, (N, 2) long.

    Worked example, grid (1, 4, 4), merge 2: the first rows are (0,0), (0,1), (1,0), (1,1) (the
    top-left 2x2 block), then (0,2), (0,3), (1,2), (1,3), and so on.
    """
    out = []
    for t, h, w in grid_thw:
        hh = torch.arange(h)[:, None].expand(h, w)
        ww = torch.arange(w)[None, :].expand(h, w)
        hw = torch.stack([hh, ww], dim=-1)  # (h, w, 2)
        hw = hw.reshape(h // merge, merge, w // merge, merge, 2).permute(0, 2, 1, 3, 4).reshape(-1, 2)
        out.append(hw.repeat(t, 1))
    return torch.cat(out)


def patch_groups(grid_thw: list[tuple[int, int, int]], limit: int) -> list[list[tuple[int, int, int]]]:
    """The grids split into consecutive groups of at most `limit` patches, for the tower to take one
    group at a time: its activations grow with the patches it holds (40-50 kB a patch in
    GLM-4.1V-9B's bfloat16 tower: ~10 GB for a 60,000-token PDF's 240,000 patches at once), and
    nothing crosses a segment, so the features are those of one pass. A video is cut between its
    temporal slices; a slice larger than `limit` is a group of its own.

    Worked example, limit 100: [(1, 8, 8), (3, 6, 6), (1, 12, 12)] -> [[(1, 8, 8), (1, 6, 6)],
    [(2, 6, 6)], [(1, 12, 12)]] (64 + 36 = 100; 72 + 144 > 100, and 144 > 100 stands alone).
    """
    groups: list[list[tuple[int, int, int]]] = [[]]
    held = 0
    for t, h, w in grid_thw:
        while t:
            take = max(1, min(t, (limit - held) // (h * w)))  # slices that still fit the current group
            if held and held + take * h * w > limit:
                groups.append([])
                held = 0
                continue
            groups[-1].append((take, h, w))
            held += take * h * w
            t -= take
    return [g for g in groups if g]


def segment_runs(grid_thw: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """Attention segments grouped into runs of equal length: [(segment_length, count), ...].

    Every temporal slice of every grid is one segment; consecutive equal lengths share a run.
    """
    runs: list[list[int]] = []
    for t, h, w in grid_thw:
        if runs and runs[-1][0] == h * w:
            runs[-1][1] += t
        else:
            runs.append([h * w, t])
    return [(length, count) for length, count in runs]


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        kernel = (cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_channels, cfg.hidden_size, kernel_size=kernel, stride=kernel, bias=True)

    def forward(self, rows: torch.Tensor | PatchCodes) -> torch.Tensor:
        # kernel == stride: the Conv3d is a matmul over each flattened (C, T, p, p) patch row
        weight = self.proj.weight.flatten(1)  # (hidden, C*T*p*p)
        return F.linear(patch_rows(rows, weight.dtype), weight, self.proj.bias)


class PositionTable(nn.Module):
    """The learned (image_size/patch)^2 absolute position table, resampled to each grid."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.side = cfg.pos_grid
        self.merge = cfg.spatial_merge_size
        self.position_embedding = Embedding(self.side**2, cfg.hidden_size)

    def forward(self, grid_thw: list[tuple[int, int, int]]) -> torch.Tensor:
        weight = self.position_embedding.weight
        table = weight.view(self.side, self.side, -1).permute(2, 0, 1)[None].float()  # (1, C, side, side)
        resized: dict[tuple[int, int], torch.Tensor] = {}
        out = []
        for t, h, w in grid_thw:
            if (h, w) not in resized:
                grid = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)[0]  # (C, h, w)
                m = self.merge
                grid = grid.reshape(-1, h // m, m, w // m, m).permute(1, 3, 2, 4, 0)  # (h/m, w/m, m, m, C)
                resized[(h, w)] = grid.reshape(h * w, -1)
            out.append(resized[(h, w)].repeat(t, 1))
        return torch.cat(out).to(weight.dtype)  # (N, C)


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=cfg.attention_bias)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                runs: list[tuple[int, int]]) -> torch.Tensor:
        N = x.shape[0]
        H, D = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).view(N, 3, H, D).unbind(1)  # each (N, H, D)
        q, k = apply_vision_rope(q, cos, sin), apply_vision_rope(k, cos, sin)
        out, start = [], 0
        for length, count in runs:
            end = start + length * count
            qs, ks, vs = (z[start:end].view(count, length, H, D).transpose(1, 2) for z in (q, k, v))  # (n, H, L, D)
            o = F.scaled_dot_product_attention(qs, ks, vs)  # (n, H, L, D)
            out.append(o.transpose(1, 2).reshape(length * count, H * D))
            start = end
        return self.proj(torch.cat(out))


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.norm2 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = VisionAttention(cfg)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.out_hidden_size)

    def forward(self, x, cos, sin, runs):
        x = x + self.attn(self.norm1(x), cos, sin, runs)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        dim = cfg.out_hidden_size
        self.proj = nn.Linear(dim, dim, bias=False)
        self.post_projection_norm = nn.LayerNorm(dim)
        self.gate_proj = nn.Linear(dim, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(dim, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.post_projection_norm(self.proj(x)))
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class VisionModel(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.post_conv_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.embeddings = PositionTable(cfg)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.post_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        m = cfg.spatial_merge_size
        self.downsample = nn.Conv2d(cfg.hidden_size, cfg.out_hidden_size, kernel_size=m, stride=m)
        self.merger = PatchMerger(cfg)
        self.register_buffer("inv_freq", inverse_frequencies(cfg.head_dim // 2, cfg.rope_theta), persistent=False)

    def forward(self, pixel_values: torch.Tensor | PatchCodes, grid_thw: torch.Tensor | list,
                pause=None, tick=None) -> torch.Tensor:
        """pixel_values (N, C*T*p*p) or PatchCodes standing for them, grid_thw (n, 3) in patches ->
        (N / merge^2, out_hidden). At most GROUP_PATCHES patches go through the tower at a time;
        `pause` (optional) is called between two groups (batching.py: other requests' tokens).
        `tick` (optional) is told the work of each block and of the merger as it is done (work.py)."""
        grids = [tuple(int(v) for v in row) for row in (grid_thw.tolist() if torch.is_tensor(grid_thw) else grid_thw)]
        groups = patch_groups(grids, GROUP_PATCHES)
        if len(groups) == 1:
            return self._forward(pixel_values, grids, tick)
        out, row = [], 0
        for k, group in enumerate(groups):
            if k and pause is not None:
                pause()
            n = sum(t * h * w for t, h, w in group)
            out.append(self._forward(pixel_values[row:row + n], group, tick))
            row += n
        return torch.cat(out)

    def _forward(self, pixel_values: torch.Tensor | PatchCodes, grids: list[tuple[int, int, int]],
                 tick=None) -> torch.Tensor:
        m = self.cfg.spatial_merge_size
        x = self.post_conv_layernorm(self.patch_embed(pixel_values))  # (N, C)
        cos, sin = vision_rope(block_major_positions(grids, m).to(x.device), self.inv_freq)
        x = x + self.embeddings(grids)
        runs = segment_runs(grids)
        block_work = work.vision_block_work(self.cfg, grids) if tick is not None else 0.0
        for block in self.blocks:
            x = block(x, cos, sin, runs)
            if tick is not None:
                tick(block_work)
        x = self.post_layernorm(x)
        C = x.shape[-1]
        x = x.view(-1, m * m, C).transpose(1, 2).reshape(-1, C * m * m)  # (N/m^2, C*m*m): (C, 2, 2) windows
        x = F.linear(x, self.downsample.weight.flatten(1), self.downsample.bias)  # the Conv2d, kernel == stride
        x = self.merger(x)
        if tick is not None:
            tick(work.merger_work(self.cfg, grids))
        return x
