"""Vision tower structure: attention stays inside each image / frame pair and builds no mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import glmv_cli
from glmv_cli.model.vision import block_major_positions, segment_runs


def test_block_major_positions_worked_example():
    pos = block_major_positions([(1, 4, 4)], merge=2)
    assert pos[:8].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [0, 3], [1, 2], [1, 3]]
    assert pos.shape == (16, 2)
    assert block_major_positions([(3, 2, 2)], merge=2).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] * 3


def test_segment_runs_group_equal_consecutive_segments():
    assert segment_runs([(1, 4, 6), (1, 4, 6), (3, 2, 2), (1, 8, 8)]) == [(24, 2), (4, 3), (64, 1)]


def test_attention_is_per_segment_without_a_mask(tiny_folder, monkeypatch):
    """A 2184x2184 image (the size a 2194^2 input resizes to: 156x156 patches) plus a 2-pair video:
    every SDPA call gets no mask and sequences no longer than one segment."""
    calls = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        calls.append((tuple(q.shape), attn_mask))
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kw)

    glm = glmv_cli.load(tiny_folder, device="cpu", dtype="float32")
    grids = [(1, 156, 156), (2, 6, 8)]
    rows = torch.randn(156 * 156 + 2 * 48, 1176)
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    out = glm.model.visual(rows, grids)
    assert out.shape == ((156 * 156 + 2 * 48) // 4, glm.config.text.hidden_size)
    depth = glm.config.vision.depth
    assert len(calls) == 2 * depth
    heads = glm.config.vision.num_heads
    assert {shape for shape, _ in calls} == {(1, heads, 156 * 156, 16), (2, heads, 48, 16)}
    assert all(mask is None for _, mask in calls)
