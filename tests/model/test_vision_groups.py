"""The vision tower takes many images (a long PDF's pages, a video's frames) a group of patches at a
time, so its activations do not grow with the prompt: the groups (patch_groups), and the features
and logits with the tower forced into small groups, against transformers' one pass."""

from __future__ import annotations

import pytest
import torch

import glmv_cli
from glmv_cli.model import vision
from glmv_cli.model.vision import patch_groups
from tests.model.conftest import model_kwargs
from tests.reference import building_block_logits

ATOL = 1e-4


def test_the_worked_example():
    assert patch_groups([(1, 8, 8), (3, 6, 6), (1, 12, 12)], 100) == [[(1, 8, 8), (1, 6, 6)], [(2, 6, 6)],
                                                                      [(1, 12, 12)]]


@pytest.mark.parametrize("limit", [1, 36, 100, 150, 10**9])
def test_groups_keep_every_slice_in_order_within_the_limit(limit):
    grids = [(1, 8, 8), (3, 6, 6), (1, 12, 12), (5, 4, 4), (2, 10, 10), (1, 2, 2)]
    groups = patch_groups(grids, limit)
    slices = [(h, w) for t, h, w in grids for _ in range(t)]
    assert [(h, w) for group in groups for t, h, w in group for _ in range(t)] == slices
    for group in groups:
        patches = sum(t * h * w for t, h, w in group)
        assert patches <= limit or (len(group) == 1 and group[0][0] == 1)  # a slice too big stands alone
    if limit >= sum(t * h * w for t, h, w in grids):
        assert groups == [grids]


@pytest.fixture(scope="module")
def ours(tiny_folder):
    return glmv_cli.load(tiny_folder, device="cpu", dtype="float32")


@pytest.mark.parametrize("limit", [1, 64])
@pytest.mark.parametrize("name", ["images", "video", "mixed"])
def test_logits_in_groups_match_reference(ours, reference, prompt_inputs, monkeypatch, name, limit):
    inputs = prompt_inputs(name)
    grids = [g for key in ("image_grid_thw", "video_grid_thw") for g in inputs.get(key, torch.empty(0, 3)).tolist()]
    assert len(patch_groups([tuple(g) for g in grids], limit)) > 1  # the tower does run in groups
    monkeypatch.setattr(vision, "GROUP_PATCHES", limit)
    expected = building_block_logits(reference, inputs)
    got = ours.model(**model_kwargs(inputs))
    assert (got - expected).abs().max().item() <= ATOL


def test_features_in_groups_equal_one_pass(ours, monkeypatch):
    """From the patch codes the loaders hand over (sliced per group), as from their float rows."""
    from glmv_cli.inputs.image import preprocess_image
    from glmv_cli.inputs.patches import PatchSpec
    from glmv_cli.model.patch_codes import PatchCodes
    from tests.model.conftest import random_image

    visuals = [preprocess_image(random_image(h, w, seed=i), PatchSpec()) for i, (h, w) in
               enumerate([(112, 168), (56, 84), (200, 140)])]
    codes = PatchCodes.cat([v.pixel_values for v in visuals])
    grids = [tuple(v.grid_thw) for v in visuals]
    whole = ours.model.visual(codes.rows(), grids)
    monkeypatch.setattr(vision, "GROUP_PATCHES", 64)
    assert len(patch_groups(grids, 64)) == 3
    assert (ours.model.visual(codes, grids) - whole).abs().max().item() <= 1e-5
    assert (ours.model.visual(codes.rows(), grids) - whole).abs().max().item() <= 1e-5
