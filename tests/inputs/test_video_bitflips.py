"""Bit-flipped MP4s (made here from a clip PyAV encodes): every one either loads or fails with one
InputError line; none escapes as another exception (a UnicodeDecodeError from damaged container
metadata used to end `glmv video` with exit 1). Damaged metadata alone does not stop the frames."""

from __future__ import annotations

import random

import numpy as np
import pytest

from glmv_cli.errors import InputError
from glmv_cli.inputs.patches import PatchSpec
from glmv_cli.inputs.video import load_video
from tests.cli.conftest import run_glmv, scripted  # noqa: F401  (fixture)
from tests.inputs.media import encode_video

SPEC = PatchSpec(min_pixels=3136, max_pixels=64 * 14 * 14)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return encode_video(tmp_path_factory.mktemp("flips") / "clip.mp4", frames=8, fps=4)


def metadata_flipped(clip, tmp_path):
    """The clip with a high bit set in its encoder tag ("Lavf..."): no longer UTF-8."""
    data = bytearray(clip.read_bytes())
    at = data.find(b"Lavf")
    assert at > 0
    data[at + 1] ^= 0x80
    bad = tmp_path / "metadata.mp4"
    bad.write_bytes(bytes(data))
    return bad


def test_damaged_metadata_does_not_stop_the_frames(clip, tmp_path):
    good, bad = load_video(clip, SPEC), load_video(metadata_flipped(clip, tmp_path), SPEC)
    assert np.array_equal(good.rows(), bad.rows()) and good.timestamps == bad.timestamps


def test_glmv_video_reads_a_clip_with_damaged_metadata(clip, tmp_path, scripted):  # noqa: F811
    run = run_glmv("video", metadata_flipped(clip, tmp_path), "What happens?", "--model", scripted, "-R")
    assert run.code == 0, run.err
    assert "UnicodeDecodeError" not in run.err


def test_random_bit_flips_load_or_give_an_input_error(clip, tmp_path):
    data, rng, outcomes = clip.read_bytes(), random.Random(0), {"loaded": 0, "refused": 0}
    for k in range(150):
        bad = bytearray(data)
        for _ in range(3):
            bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{k}.mp4"
        path.write_bytes(bytes(bad))
        try:
            load_video(path, SPEC)
            outcomes["loaded"] += 1
        except InputError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            outcomes["refused"] += 1
    assert outcomes["loaded"] and outcomes["refused"]  # both kinds of damage were met
