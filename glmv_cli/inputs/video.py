"""A video file -> one VisualInput: frame sampling as GLM-4.1V's processor does it, then patches.

Sampling follows `Glm4vVideoProcessor.sample_frames`: `fps` frames per second (2 by default)
for videos up to 300 s, otherwise 300*fps frames spread evenly (linspace over the duration);
repeated indices dropped; an odd count gets its last frame again (frames go in pairs). Extras:
a start/end window in seconds (sampled as if it were the whole video; timestamps stay absolute)
and `max_frames` (an even number of the sampled frames, spread evenly).

Timestamps are the real presentation times of the first frame of each pair. Frames are resized
as the reference's torch stand-in does (float32 bicubic, antialias, clamp, round, uint8), batch
by batch while decoding, then normalised and patchified like images.
"""

from __future__ import annotations

import bisect
import logging
import math
from pathlib import Path

import numpy as np

from glmv_cli.errors import InputError
from glmv_cli.inputs.patches import PatchSpec, patchify_frames, smart_resize
from glmv_cli.inputs.video_decode import VideoProbe, decode_frames, probe_video
from glmv_cli.inputs.visual import VisualInput

log = logging.getLogger(__name__)

MAX_DURATION = 300.0  # seconds sampled at `fps`; longer videos get 300*fps frames in all
RESIZE_BATCH = 8  # frames resized at once (float32 copies of full frames are large)


def reference_indices(frame_count: int, fps: float, duration: float, requested_fps: float = 2.0) -> list[int]:
    """Frame indices exactly as Glm4vVideoProcessor.sample_frames picks them (even count)."""
    last = frame_count - 1
    duration = duration or round(last / fps) + 1
    if duration <= MAX_DURATION:
        n = max(math.floor(duration * requested_fps), 1)
        picked = [min(last, math.ceil(i * fps / requested_fps)) for i in range(n)]
    elif int(MAX_DURATION * requested_fps) >= frame_count:
        picked = list(range(frame_count))
    else:
        seconds = np.linspace(0, duration, int(MAX_DURATION * requested_fps), endpoint=True)
        picked = [min(last, math.ceil(t * fps)) for t in seconds]
    return _pad_even(list(dict.fromkeys(picked)))


def _pad_even(indices: list[int]) -> list[int]:
    return indices + indices[-1:] if len(indices) % 2 else indices


def sample_indices(
    probe: VideoProbe, *, fps: float = 2.0, max_frames: int | None = None,
    start: float | None = None, end: float | None = None,
) -> list[int]:
    """The frames to show the model: the reference sampling over [start, end), then max_frames."""
    if fps <= 0:
        raise InputError(f"--fps must be positive, got {fps}")
    if max_frames is not None and max_frames < 2:
        raise InputError(f"--max-frames must be at least 2 (frames go in pairs), got {max_frames}")
    lo, hi = _window(probe, start, end)
    count = hi - lo
    picked = [lo + i for i in reference_indices(count, probe.fps, count / probe.fps, fps)]
    if max_frames is not None and len(picked) > max_frames:
        unique = list(dict.fromkeys(picked))
        keep = max_frames - max_frames % 2
        picked = [unique[round(k)] for k in np.linspace(0, len(unique) - 1, keep)]
    return picked


def _window(probe: VideoProbe, start: float | None, end: float | None) -> tuple[int, int]:
    """[start, end) in seconds -> frame range [lo, hi); an end past the video is clamped."""
    if start is None and end is None:
        return 0, probe.frame_count
    duration, name = probe.duration, Path(probe.path).name
    s = 0.0 if start is None else float(start)
    e = duration if end is None else min(float(end), duration)
    if s < 0:
        raise InputError(f"--start {s:g}s is before the video begins; give 0 or more")
    if end is not None and end <= s:
        raise InputError(f"--end {float(end):g}s is not after --start {s:g}s; give a window that ends after it starts")
    if s >= duration:
        raise InputError(f"--start {s:g}s is past the end of {name} ({duration:.2f}s long)")
    lo = bisect.bisect_left(probe.frame_times, s - 1e-6)  # first frame at or after start
    hi = bisect.bisect_left(probe.frame_times, e - 1e-6)  # first frame at or after end
    if hi <= lo:
        raise InputError(f"no frames of {name} lie between {s:g}s and {e:g}s; widen the window")
    return lo, hi


def video_size(num_frames: int, height: int, width: int, spec: PatchSpec) -> tuple[int, int]:
    """(height, width) the frames are resized to, smart_resize over the whole frame count."""
    return smart_resize(num_frames, height, width, temporal_factor=spec.temporal_patch_size,
                        factor=spec.factor, min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (F, H, W, 3) -> uint8 (F, h, w, 3): torch float32 bicubic, antialias, clamp, round."""
    import torch
    import torch.nn.functional as F

    if frames.shape[1:3] == tuple(size):
        return frames  # bicubic at scale 1 is the identity
    out = []
    for k in range(0, len(frames), RESIZE_BATCH):
        x = torch.from_numpy(np.ascontiguousarray(frames[k:k + RESIZE_BATCH]))
        x = x.permute(0, 3, 1, 2).to(torch.float32)  # (B, 3, H, W)
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        out.append(x.clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy())  # (B, h, w, 3)
    return np.concatenate(out)


def video_level_table(spec: PatchSpec) -> np.ndarray:
    """(256, 3) float32: what each uint8 level of each channel becomes with the video processor's
    fused arithmetic, (x - 255*mean) / (255*std) in float32 (bit-identical to the reference)."""
    mean = np.asarray(spec.mean, np.float32) * np.float32(255.0)
    std = np.asarray(spec.std, np.float32) * np.float32(255.0)
    return (np.arange(256, dtype=np.float32)[:, None] - mean) / std


def frame_codes(frames: np.ndarray, spec: PatchSpec) -> tuple[np.ndarray, tuple[int, int, int]]:
    """uint8 (F, H, W, 3) -> the patch rows' uint8 levels (gt*gh*gw, 3, T, p*p), laid out as the
    rows are (patchify_frames), and grid (gt, gh, gw). Rows are these levels looked up in
    video_level_table, on the model's device (model.patch_codes)."""
    codes, grid = patchify_frames(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)), spec)
    return codes.reshape(len(codes), 3, spec.temporal_patch_size, -1), grid


def preprocess_video(
    frames: np.ndarray, timestamps: list[float] | tuple[float, ...], spec: PatchSpec, *,
    source: str = "", original_size: tuple[int, int] | None = None,
) -> VisualInput:
    """Sampled uint8 (F, H, W, 3) frames and their times (s) -> VisualInput(kind="video").

    An odd frame count repeats the last frame first (the reference's sampler never gives one).
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) != len(timestamps) or not len(frames):
        raise InputError(f"{source or 'video'}: expected (F, H, W, 3) frames with one timestamp each")
    if len(frames) % 2:
        frames = np.concatenate([frames, frames[-1:]])
        timestamps = [*timestamps, timestamps[-1]]
    height, width = frames.shape[1:3]
    frames = resize_frames(frames, video_size(len(frames), height, width, spec))
    import torch

    from glmv_cli.model.patch_codes import PatchCodes

    codes, grid = frame_codes(frames, spec)
    pixels = PatchCodes(torch.from_numpy(codes), torch.from_numpy(video_level_table(spec)), spec.temporal_patch_size)
    return VisualInput(
        kind="video", pixel_values=pixels, grid_thw=grid, timestamps=tuple(float(t) for t in timestamps[::2]),
        source=source, original_size=original_size or (width, height),
    )


def load_video(
    path: str | Path, spec: PatchSpec, *, fps: float = 2.0, max_frames: int | None = None,
    start: float | None = None, end: float | None = None, backend: str = "auto",
) -> VisualInput:
    """Probe, sample, decode (resizing batch by batch) and patchify one video file."""
    probe = probe_video(path)
    indices = sample_indices(probe, fps=fps, max_frames=max_frames, start=start, end=end)
    size = video_size(len(indices), probe.height, probe.width, spec)
    frames = decode_frames(path, indices, backend=backend, probe=probe,
                           transform=lambda batch: resize_frames(batch, size))
    visual = preprocess_video(frames, [probe.frame_times[i] for i in indices], spec, source=str(path),
                              original_size=(probe.width, probe.height))
    log.info("%s: %d of %d frames (%.2f fps, %.1fs), %dx%d -> %dx%d, grid %s", path, len(indices),
             probe.frame_count, probe.fps, probe.duration, probe.width, probe.height, size[1], size[0],
             visual.grid_thw)
    return visual
