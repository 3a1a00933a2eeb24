"""Video loading on videos encoded here with PyAV, decoded by PyAV and by decord, checked against
transformers' Glm4vProcessor (sampling, pixels, grids, timestamps) and for clear errors."""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from pathlib import Path

import av  # noqa: F401  (before decord, which shadows PyAV's libvpx otherwise; see video_decode.py)
import numpy as np
import pytest

from glmv_cli.errors import InputError
from glmv_cli.inputs.patches import VIDEO_DEFAULT as VIDEO_SPEC
from glmv_cli.inputs.video import (
    load_video,
    preprocess_video,
    reference_indices,
    sample_indices,
    video_size,
)
from glmv_cli.inputs.video_decode import available_backends, decode_frames, probe_video, resolve_backend
from tests.inputs.media import encode_audio, encode_video, frame_pixels, truncate

BACKENDS = available_backends()

# (name, frames, fps, codec, suffix): containers, codecs and odd frame rates users meet
CLIPS = [
    ("h264-25fps", 50, 25, "libx264", "mp4"),
    ("h264-29.97fps", 60, Fraction(30000, 1001), "libx264", "mp4"),
    ("vp9-12.5fps", 25, Fraction(25, 2), "libvpx-vp9", "webm"),
    ("mpeg4-15fps", 30, 15, "mpeg4", "avi"),
    ("h264-7s-30fps", 210, 30, "libx264", "mp4"),
    ("h264-short", 3, 30, "libx264", "mkv"),
]


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    from tests.reference import reference_processor, write_checkpoint

    folder = write_checkpoint(tmp_path_factory.mktemp("ckpt"), state={})  # configs + tokenizer only
    return reference_processor(folder)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {name: encode_video(root / f"{name}.{ext}", frames=n, fps=fps, size=(96, 64), codec=codec)
            for name, n, fps, codec, ext in CLIPS}


def reference_run(processor, path: Path):
    """The reference processor on every frame of the file (it samples them itself)."""
    from transformers.video_utils import VideoMetadata

    probe = probe_video(path)
    frames = decode_frames(path, range(probe.frame_count), backend="pyav", probe=probe)
    meta = VideoMetadata(total_num_frames=probe.frame_count, fps=probe.fps, duration=probe.duration)
    out = processor(text="<|video|>", videos=[frames], video_metadata=[meta], do_sample_frames=True,
                    return_tensors="pt")
    text = processor.tokenizer.decode(out["input_ids"][0])
    return out, re.findall(r"<\|end_of_image\|>(\d+)", text)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", [c[0] for c in CLIPS])
def test_matches_reference_processor(processor, clips, name, backend):
    out, stamps = reference_run(processor, clips[name])
    visual = load_video(clips[name], VIDEO_SPEC, backend=backend)
    assert visual.kind == "video" and visual.original_size == (96, 64)
    assert visual.grid_thw == tuple(out["video_grid_thw"][0].tolist())
    np.testing.assert_allclose(visual.rows(), out["pixel_values_videos"].numpy(), atol=0, rtol=0)
    assert [str(int(t)) for t in visual.timestamps] == stamps
    assert len(visual.timestamps) == visual.grid_thw[0]


def test_sampling_formula_matches_reference(processor):
    from transformers.video_utils import VideoMetadata

    sampler = processor.video_processor
    cases = [(1, 30.0), (3, 30.0), (50, 25.0), (61, 29.97), (9001, 30.0), (36000, 24.0), (1000, 2.0), (599, 2.0)]
    for total, fps in cases:
        for requested in (1.0, 2.0, 3.0):
            meta = VideoMetadata(total_num_frames=total, fps=fps, duration=total / fps)
            want = sampler.sample_frames(meta, fps=requested).tolist()
            assert reference_indices(total, fps, total / fps, requested) == want, (total, fps, requested)


def test_probe_reports_real_frame_times(clips):
    probe = probe_video(clips["h264-29.97fps"])
    assert (probe.frame_count, probe.width, probe.height, probe.codec) == (60, 96, 64, "h264")
    assert probe.fps == pytest.approx(30000 / 1001)
    assert probe.duration == pytest.approx(60 * 1001 / 30000)
    assert probe.frame_times[15] == pytest.approx(15 * 1001 / 30000, abs=1e-9)
    webm = probe_video(clips["vp9-12.5fps"])  # webm headers carry no frame count
    assert webm.frame_count == 25 and webm.frame_times[-1] == pytest.approx(24 / 12.5)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="decord is not installed")
@pytest.mark.parametrize("name", ["h264-25fps", "vp9-12.5fps", "mpeg4-15fps", "h264-7s-30fps"])
def test_backends_decode_the_same_frames(clips, name):
    n = probe_video(clips[name]).frame_count
    picks = [n - 1, 0, n // 2, 1, n // 2]  # unsorted, with a repeat
    a = decode_frames(clips[name], picks, backend="pyav")
    b = decode_frames(clips[name], picks, backend="decord")
    assert a.shape == (5, 64, 96, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)  # measured: identical pixels on every clip (both use swscale's BT.601)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_phone_videos_are_turned_upright(tmp_path, caplog, backend, rotation):
    """A display matrix turns the stored frames (a portrait phone video is stored landscape): the
    frames come upright from both backends, and the model is told the upright size. decord 0.6
    fails on quarter turns at this size, so those go to PyAV, with a warning."""
    path = encode_video(tmp_path / "phone.mp4", frames=8, fps=4, size=(64, 48), rotation=rotation)
    probe = probe_video(path)
    assert probe.rotation == rotation % 360
    assert (probe.width, probe.height) == ((64, 48) if rotation == 180 else (48, 64))
    frames = decode_frames(path, [0, 5], backend=backend, probe=probe)
    stored = np.stack([frame_pixels(i, 64, 48) for i in (0, 5)])
    upright = np.rot90(stored, rotation // 90, axes=(1, 2))
    assert frames.shape == upright.shape
    assert np.abs(frames.astype(int) - upright).mean() < 8  # lossy coding; turned the wrong way it is ~90
    visual = load_video(path, VIDEO_SPEC, backend=backend)
    assert visual.original_size == (probe.width, probe.height)
    assert ("decoding it with PyAV" in caplog.text) == (backend == "decord" and rotation != 180)


def test_pyav_seeking_gives_the_frames_a_forward_decode_gives(tmp_path, caplog):
    path = encode_video(tmp_path / "gop.mp4", frames=240, fps=30, size=(64, 48), gop=12)
    everything = decode_frames(path, range(240), backend="pyav")
    picks = [3, 40, 41, 100, 179, 239]
    with caplog.at_level(logging.DEBUG, logger="glmv_cli.inputs.video_decode"):
        sparse = decode_frames(path, picks, backend="pyav")
    assert "seek to keyframe" in caplog.text
    assert np.array_equal(sparse, everything[picks])
    for k, i in enumerate(picks):  # and each is the frame encoded at i, not a neighbour (lossy codec)
        errors = {j: np.abs(sparse[k].astype(int) - frame_pixels(j, 64, 48)).mean() for j in range(i - 2, i + 3)}
        assert min(errors, key=errors.get) == i


def test_window_samples_inside_it_with_absolute_timestamps(clips):
    path = clips["h264-7s-30fps"]
    probe = probe_video(path)
    idx = sample_indices(probe, start=2.0, end=5.0)
    assert idx == [60, 75, 90, 105, 120, 135]
    visual = load_video(path, VIDEO_SPEC, start=2.0, end=5.0)
    assert visual.timestamps == (2.0, 3.0, 4.0)
    assert sample_indices(probe, start=6.5) == [195, 195]  # one frame left: paired with itself
    assert sample_indices(probe, end=100) == sample_indices(probe)  # an end past the video is clamped


def test_fps_and_max_frames(clips):
    probe = probe_video(clips["h264-7s-30fps"])
    assert len(sample_indices(probe)) == 14
    assert sample_indices(probe, fps=1.0) == [0, 30, 60, 90, 120, 150, 180, 180]
    assert len(sample_indices(probe, fps=4.0)) == 28
    few = sample_indices(probe, max_frames=5)  # odd max -> the even number below it
    assert few == [0, 60, 135, 195]
    assert sample_indices(probe, max_frames=14) == sample_indices(probe)
    visual = load_video(clips["h264-7s-30fps"], VIDEO_SPEC, max_frames=4)
    assert visual.grid_thw[0] == 2 and visual.timestamps == (0.0, 4.5)


def test_odd_counts_are_padded_with_the_last_frame():
    frames = np.stack([frame_pixels(i, 96, 64) for i in range(3)])
    odd = preprocess_video(frames, [0.0, 0.5, 1.0], VIDEO_SPEC, source="x")
    even = preprocess_video(np.concatenate([frames, frames[-1:]]), [0.0, 0.5, 1.0, 1.0], VIDEO_SPEC)
    assert odd.grid_thw == even.grid_thw == (2, *odd.grid_thw[1:])
    assert np.array_equal(odd.rows(), even.rows())
    assert odd.timestamps == (0.0, 1.0)
    # a 1.5 s clip samples 3 frames at 2 fps: the reference pads them to 4
    assert reference_indices(45, 30.0, 1.5) == [0, 15, 30, 30]


def test_video_size_uses_the_frame_count_in_the_budget():
    assert video_size(600, 720, 1280, VIDEO_SPEC) == (196, 364)  # shared/reference/glm4v.md 6.2
    assert video_size(2, 720, 1280, VIDEO_SPEC) == (728, 1288)


# ---- errors: one InputError line naming the file and what to do -----------------------------

def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match=r"nope\.mp4: no such file"):
        load_video(tmp_path / "nope.mp4", VIDEO_SPEC)
    with pytest.raises(InputError, match="is a directory"):
        load_video(tmp_path, VIDEO_SPEC)


def test_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("just some text\n" * 50)
    with pytest.raises(InputError, match=r"notes\.mp4: not a readable video .*re-encode"):
        load_video(path, VIDEO_SPEC)


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_mp4(clips, tmp_path, backend):
    half = truncate(clips["h264-7s-30fps"], tmp_path / "half.mp4")  # the index (moov) is at the end
    with pytest.raises(InputError, match=r"half\.mp4: not a readable video .*truncated"):
        load_video(half, VIDEO_SPEC, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_webm_plays_shorter_with_a_warning(clips, tmp_path, backend, caplog):
    cut = truncate(clips["vp9-12.5fps"], tmp_path / "cut.webm", 0.4)  # no index to lose: it demuxes
    visual = load_video(cut, VIDEO_SPEC, backend=backend)
    assert visual.grid_thw[0] == 1
    assert "the header says 2.0s, the video frames cover" in caplog.text


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_mp4_with_index_first(tmp_path, backend):
    """A "faststart" mp4 (index first, as streamed files are) cut in half: the index lists frames
    the file no longer has."""
    path = tmp_path / "faststart.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"threads": "1"}  # x264's output (so where the cut falls) depends on its thread count
        for i in range(60):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame_pixels(i, 64, 48), format="rgb24")))
        container.mux(stream.encode())
    half = truncate(path, tmp_path / "half.mp4")
    with pytest.raises(InputError, match=r"half\.mp4 is truncated: its index lists 60 frames but only (\d+) are "
                                         r"in the file; download it again") as error:
        load_video(half, VIDEO_SPEC, backend=backend)
    left = int(re.search(r"only (\d+) are", str(error.value)).group(1))
    assert 15 <= left <= 35  # about half of the 60 frames: the count is of what is there, not a constant


def test_zero_length_video(tmp_path):
    empty = encode_video(tmp_path / "empty.mp4", frames=0, fps=30)
    with pytest.raises(InputError, match=r"empty\.mp4 has no video stream \(a zero-length video, or its header is dam"):
        load_video(empty, VIDEO_SPEC)


@pytest.mark.parametrize("suffix,codec,cover", [("m4a", "aac", False), ("mka", "libopus", False),
                                               ("mp3", "libmp3lame", True)])
def test_audio_only(tmp_path, suffix, codec, cover):
    """Audio files, one with album art (a one-frame video stream flagged attached_pic, not a video)."""
    audio = encode_audio(tmp_path / f"voice.{suffix}", codec=codec, rate=48000 if codec == "libopus" else 16000,
                         cover=cover)
    with pytest.raises(InputError, match=rf"voice\.{suffix} has only audio, no video stream"):
        load_video(audio, VIDEO_SPEC)


@pytest.mark.parametrize("start,end,message", [
    (9.0, None, r"--start 9s is past the end of h264-7s-30fps\.mp4 \(7\.00s long\)"),
    (3.0, 2.0, r"--end 2s is not after --start 3s"),
    (-1.0, None, r"--start -1s is before the video begins"),
])
def test_window_outside_the_video(clips, start, end, message):
    with pytest.raises(InputError, match=message):
        load_video(clips["h264-7s-30fps"], VIDEO_SPEC, start=start, end=end)


def test_backend_choice(monkeypatch):
    assert resolve_backend("auto") == "pyav"  # measured faster or equal: see video_decode.py
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert available_backends() == ("pyav",)
    with pytest.raises(InputError, match="the decord video backend is not installed .*use --video-backend pyav"):
        resolve_backend("decord")


def test_bad_options(clips):
    with pytest.raises(InputError, match="--max-frames must be at least 2"):
        load_video(clips["h264-25fps"], VIDEO_SPEC, max_frames=1)
    with pytest.raises(InputError, match="--fps must be positive"):
        load_video(clips["h264-25fps"], VIDEO_SPEC, fps=0)
    with pytest.raises(InputError, match="unknown video backend 'ffmpeg'"):
        resolve_backend("ffmpeg")
