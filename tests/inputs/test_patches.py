"""Patch specs from checkpoint configs, user pixel limits, and the image arithmetic vs transformers."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from glmv_cli.errors import InputError, ModelError
from glmv_cli.inputs.patches import (
    VIDEO_DEFAULT,
    PatchSpec,
    image_codes,
    level_table,
    load_patch_specs,
    normalize_image,
    patchify_frames,
    smart_resize,
    with_pixel_limits,
)
from glmv_cli.model.patch_codes import PatchCodes

IMAGE_CFG = {
    "size": {"shortest_edge": 12544, "longest_edge": 9633792}, "do_rescale": True, "patch_size": 14,
    "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711], "image_processor_type": "Glm4vImageProcessor",
    "processor_class": "Glm4vProcessor",
}


def write(folder, name, data):
    (folder / name).write_text(json.dumps(data) if isinstance(data, dict) else data)


def test_specs_from_both_files(tmp_path):
    write(tmp_path, "preprocessor_config.json", IMAGE_CFG)
    write(tmp_path, "video_preprocessor_config.json",
          {**IMAGE_CFG, "size": {"shortest_edge": 3136, "longest_edge": 47040000}})
    image, video = load_patch_specs(tmp_path)
    assert image == PatchSpec(min_pixels=12544, max_pixels=9633792)
    assert (video.min_pixels, video.max_pixels) == (3136, 47040000)
    assert image.mean == tuple(IMAGE_CFG["image_mean"]) and image.factor == 28 and image.row_size == 1176


def test_missing_video_config_falls_back_to_the_image_file(tmp_path):
    size = {"shortest_edge": 100, "longest_edge": 5000}
    write(tmp_path, "preprocessor_config.json", {**IMAGE_CFG, "size": size})
    image, video = load_patch_specs(tmp_path)
    assert image == video and image.max_pixels == 5000


def test_no_config_gives_glm41v_defaults(tmp_path):
    image, video = load_patch_specs(tmp_path)
    assert image == PatchSpec() and video == VIDEO_DEFAULT and video.max_pixels == 47040000


def test_legacy_pixel_keys_and_nested_processor_config(tmp_path):
    legacy = {k: v for k, v in IMAGE_CFG.items() if k != "size"}
    write(tmp_path, "preprocessor_config.json", {**legacy, "min_pixels": 3136, "max_pixels": 1003520})
    image, _ = load_patch_specs(tmp_path)
    assert (image.min_pixels, image.max_pixels) == (3136, 1003520)
    nested = {"image_processor": {**IMAGE_CFG, "merge_size": 4},
              "video_processor": {"size": {"min_pixels": 1, "max_pixels": 2}}}
    write(tmp_path, "processor_config.json", nested)
    image, video = load_patch_specs(tmp_path)
    assert image.merge_size == 4 and (video.min_pixels, video.max_pixels) == (1, 2)


def test_broken_config_is_a_model_error(tmp_path):
    write(tmp_path, "preprocessor_config.json", "{not json")
    with pytest.raises(ModelError, match="preprocessor_config.json is not readable JSON"):
        load_patch_specs(tmp_path)
    write(tmp_path, "preprocessor_config.json", {**IMAGE_CFG, "patch_size": 0})
    with pytest.raises(ModelError, match="non-positive"):
        load_patch_specs(tmp_path)


def test_user_pixel_limits():
    spec = with_pixel_limits(PatchSpec(), max_pixels=2_000_000)
    assert spec == replace(PatchSpec(), max_pixels=2_000_000)
    assert with_pixel_limits(spec) == spec
    assert with_pixel_limits(spec, min_pixels=5000).min_pixels == 5000
    with pytest.raises(InputError, match="--max-pixels 1000 is below the smallest possible input"):
        with_pixel_limits(PatchSpec(), max_pixels=1000)
    with pytest.raises(InputError, match="--min-pixels 5000000 must be positive and at most --max-pixels"):
        with_pixel_limits(PatchSpec(), min_pixels=5_000_000, max_pixels=2_000_000)


@pytest.mark.parametrize("h, w", [(1, 1), (10, 10), (27, 300), (50, 50), (336, 336), (720, 1280),
                                  (1024, 1024), (3000, 4000), (10, 1500), (20, 1000), (7, 1399)])
def test_smart_resize_equals_reference(h, w):
    from transformers.models.glm4v.image_processing_pil_glm4v import smart_resize as ref_resize

    for lo, hi in ((12544, 9633792), (12544, 11760000), (3136, 200_000)):
        want = ref_resize(2, h, w, min_pixels=lo, max_pixels=hi)
        assert smart_resize(2, h, w, min_pixels=lo, max_pixels=hi) == want


def test_aspect_ratio_beyond_200_is_refused():
    with pytest.raises(InputError, match=r"aspect ratio 201:1 is beyond the model's 200:1 limit"):
        smart_resize(2, 28, 28 * 201)


def test_normalize_and_patchify_equal_reference_bit_for_bit():
    from transformers import Glm4vImageProcessorPil
    from transformers.image_transforms import normalize, rescale

    ref = Glm4vImageProcessorPil()
    pixels = np.random.default_rng(0).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    spec = PatchSpec()
    ours = normalize_image(pixels, spec)  # (3, H, W)
    x = rescale(np.moveaxis(pixels, -1, 0), 1 / 255, input_data_format="channels_first")
    theirs = normalize(x, spec.mean, spec.std, input_data_format="channels_first")
    assert ours.dtype == np.float32 and np.array_equal(ours, theirs)
    rows, grid = patchify_frames(ours[None], spec)
    ref_rows, gh, gw = ref.patchify(theirs, patch_size=14, merge_size=2, temporal_patch_size=2)
    assert grid == (1, gh, gw) == (1, 4, 6) and np.array_equal(rows, ref_rows)


@pytest.mark.parametrize("h, w, merge", [(56, 84, 2), (28, 28 * 9, 2), (112, 56, 2), (42, 70, 1)])
def test_image_codes_expand_to_the_normalised_patchified_frame_bit_for_bit(h, w, merge):
    """The uint8 path (levels, expanded by the model) gives exactly normalize_image + patchify_frames
    (the reference's rows)."""
    pixels = np.random.default_rng(h + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    spec = PatchSpec(merge_size=merge)
    codes, grid = image_codes(pixels, spec)
    table = torch.from_numpy(level_table(spec))
    rows = PatchCodes(torch.from_numpy(codes), table, spec.temporal_patch_size).rows().numpy()
    want_rows, want_grid = patchify_frames(normalize_image(pixels, spec)[None], spec)
    assert grid == want_grid and rows.dtype == np.float32 and np.array_equal(rows, want_rows)


@pytest.mark.parametrize("h, w", [(28, 28 * 200), (28, 28 * 201), (1, 200), (1, 201), (1, 250), (6000, 29)])
def test_aspect_ratio_limit_as_reference(h, w):
    """Exactly 200:1 passes, beyond is refused, judged after tiny images are scaled up."""
    from transformers.models.glm4v.image_processing_pil_glm4v import smart_resize as ref_resize

    try:
        want = ref_resize(2, h, w, min_pixels=12544, max_pixels=9633792)
    except ValueError:
        with pytest.raises(InputError, match="beyond the model's 200:1 limit"):
            smart_resize(2, h, w, min_pixels=12544, max_pixels=9633792)
    else:
        assert smart_resize(2, h, w, min_pixels=12544, max_pixels=9633792) == want
