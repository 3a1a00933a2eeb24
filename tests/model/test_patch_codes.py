"""Images and videos reach the model as uint8 levels (PatchCodes) and are expanded on its device:
the rows are the loaders' rows bit for bit (tests/inputs compares those with transformers'
processors), and the model's logits do not depend on which form it was given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import glmv_cli
from glmv_cli.app.session import Session
from glmv_cli.inputs.image import preprocess_image
from glmv_cli.inputs.patches import VIDEO_DEFAULT, PatchSpec, level_table, normalize_image, patchify_frames
from glmv_cli.inputs.video import preprocess_video
from glmv_cli.model.glm4v import on_model_device
from glmv_cli.model.patch_codes import PatchCodes, patch_rows
from tests.inputs.media import encode_video
from tests.model.conftest import random_image

SPEC, VIDEO = PatchSpec(), VIDEO_DEFAULT


def test_codes_expand_to_the_loaders_rows_bit_for_bit():
    image = random_image(84, 140, seed=3)
    visual = preprocess_image(image, SPEC)
    codes = visual.pixel_values
    assert isinstance(codes, PatchCodes) and codes.codes.dtype == torch.uint8
    rows, grid = patchify_frames(normalize_image(np.asarray(image), SPEC)[None], SPEC)  # the float path
    assert visual.grid_thw == grid and tuple(codes.shape) == rows.shape
    assert torch.equal(codes.rows(), torch.from_numpy(rows))
    assert codes.codes.numel() * SPEC.temporal_patch_size == rows.size  # a byte a level, one copy of T


def test_codes_with_every_temporal_copy_expand_as_they_are():
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (5, 3, 2, 196), dtype=torch.uint8, generator=g)
    table = torch.from_numpy(level_table(SPEC))
    want = table[levels.long(), torch.arange(3).view(1, 3, 1, 1)].reshape(5, -1)
    assert torch.equal(PatchCodes(levels, table, 2).rows(), want)


def test_several_images_join_into_one_set_of_codes():
    a, b = (preprocess_image(random_image(56, 84, seed=s), SPEC).pixel_values for s in (1, 2))
    both = PatchCodes.cat([a, b])
    assert torch.equal(both.rows(), torch.cat([a.rows(), b.rows()]))
    other = PatchCodes(a.codes, a.table + 1, a.temporal)
    with pytest.raises(ValueError, match="different tables"):
        PatchCodes.cat([a, other])


def test_codes_that_do_not_fit_their_table_are_refused():
    with pytest.raises(ValueError, match="do not fit"):
        PatchCodes(torch.zeros(4, 3, 1, 196, dtype=torch.uint8), torch.zeros(256, 2), 2)
    with pytest.raises(ValueError, match="do not fit"):
        PatchCodes(torch.zeros(4, 3, 1, 196, dtype=torch.int32), torch.zeros(256, 3), 2)


def test_codes_cross_the_model_boundary_as_levels():
    codes = preprocess_image(random_image(56, 56), SPEC).pixel_values
    moved = on_model_device(torch.device("meta"), pixel_values=codes)["pixel_values"]
    assert isinstance(moved, PatchCodes) and moved.device.type == "meta" and moved.codes.dtype == torch.uint8
    assert moved.table.device.type == "meta"


def test_video_codes_are_the_normalised_patchified_frames_bit_for_bit():
    frames = np.random.default_rng(5).integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)
    visual = preprocess_video(frames, [0.0, 0.5, 1.0, 1.5], VIDEO)
    codes = visual.pixel_values
    assert isinstance(codes, PatchCodes) and codes.codes.shape[2] == VIDEO.temporal_patch_size
    mean, std = (np.asarray(v, np.float32) * np.float32(255.0) for v in (VIDEO.mean, VIDEO.std))
    floats = np.ascontiguousarray(((frames.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2))
    rows, grid = patchify_frames(floats, VIDEO)  # the float path the loader took before
    assert visual.grid_thw == grid and torch.equal(codes.rows(), torch.from_numpy(rows))


def test_the_model_gives_the_same_logits_from_codes_and_from_rows(tiny_folder, tmp_path):
    """What `glmv ask a.png b.png clip.mp4` sends (two images and a video, as codes) against the
    same prompt with float rows: identical logits, bit for bit, in prefill and in the full forward."""
    torch.set_num_threads(1)
    paths = []
    for i, (h, w) in enumerate([(70, 98), (56, 140)]):
        paths.append(tmp_path / f"{i}.png")
        random_image(h, w, seed=i).save(paths[-1])
    paths.append(encode_video(tmp_path / "clip.mp4", frames=8, fps=4, size=(84, 56)))
    session = Session(tiny_folder, device="cpu")
    inputs = session.conversation().prompt("Compare them.", [str(p) for p in paths])
    assert isinstance(inputs.pixel_values, PatchCodes) and inputs.image_grid_thw.shape[0] == 2
    assert isinstance(inputs.pixel_values_videos, PatchCodes)
    as_codes = inputs.as_dict()
    as_rows = dict(as_codes, pixel_values=patch_rows(inputs.pixel_values),
                   pixel_values_videos=patch_rows(inputs.pixel_values_videos))
    model = glmv_cli.load(tiny_folder, device="cpu", dtype="float32").model
    n = inputs.num_prompt_tokens
    got = []
    for kwargs in (as_codes, as_rows):
        model.language_model.setup_cache(1, n + 1)
        got.append(model.prefill(**kwargs)[0])
        model.language_model.drop_cache()
    assert torch.equal(got[0], got[1])
    assert torch.equal(model(**as_codes), model(**as_rows))


def test_codes_expand_straight_into_the_vision_weights_dtype():
    """A bfloat16 model gets the float32 rows' values cast to bfloat16 (what its patch embedding
    did to float rows), without building the float32 rows first."""
    codes = preprocess_image(random_image(56, 84, seed=4), SPEC).pixel_values
    assert torch.equal(codes.rows(torch.bfloat16), codes.rows().to(torch.bfloat16))
    assert torch.equal(patch_rows(codes.rows(), torch.bfloat16), codes.rows().to(torch.bfloat16))
    assert patch_rows(codes).dtype == torch.float32


def test_a_bfloat16_vision_tower_gives_the_same_features_from_codes_and_rows(tiny_folder):
    torch.set_num_threads(1)
    visual = glmv_cli.load(tiny_folder, device="cpu", dtype="bfloat16").model.visual
    image = preprocess_image(random_image(56, 84, seed=6), SPEC)
    codes, grid = image.pixel_values, [image.grid_thw]
    assert torch.equal(visual(codes, grid), visual(codes.rows(), grid))
