"""Video files -> a probe (frame count, fps, real frame times) and chosen frames as uint8 RGB.

One probe for every backend: PyAV demuxes the packets (no decoding), which gives the frame
count, each frame's presentation time and the keyframes, even for containers whose header has
no frame count (webm). Frame i is the i-th frame in presentation order, as in transformers'
readers, so both backends index the same frames.

Two decoders behind `decode_frames`:
* "pyav": decodes forward and seeks only where a keyframe lies between the last decoded frame
  and the next wanted one far enough ahead to skip decoding (the probe knows the keyframes).
* "decord": `VideoReader.get_batch`; only where decord is installed (x86-64 wheels), on request.
"auto" is PyAV: measured with benchmarks/inputs_bench.py on a 60 s 720p h264 clip it was as
fast as decord or faster everywhere (16/32 frames with a keyframe every 30 frames: 0.57/1.14 s
against 0.77/1.60 s; every 250 frames: 2.8/3.3 s against 3.1/3.8 s; 120 frames: within noise)
with less CPU time, runs on every platform and does not shadow libraries (see _import_decord).
Both give identical pixels on every test clip.
"""

from __future__ import annotations

import bisect
import importlib.util
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from glmv_cli.errors import InputError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")
SEEK_MIN_SKIP = 16  # seek only when it skips at least this many frames (a seek flushes the decoder)
BATCH = 16  # frames decoded (and transformed) at a time, to bound memory
FIX_HINT = "check that it plays in a video player, or re-encode it (e.g. with ffmpeg)"


@dataclass(frozen=True)
class VideoProbe:
    """What the container says about the first video stream, before any decoding.

    frame_times: seconds from the first frame, one per frame, presentation order.
    duration: frame_count / fps, as transformers' video readers compute it (the sampler uses it).
    keyframes: indices of the frames a decoder can start from.
    """

    path: str
    frame_count: int
    fps: float
    width: int
    height: int
    codec: str
    frame_times: tuple[float, ...]
    keyframes: tuple[int, ...]
    pts: tuple[int, ...] | None  # raw presentation timestamps, None when the packets lack them
    # counter-clockwise degrees (0, 90, 180, 270) the frames are turned to display them upright: a
    # phone's portrait video is stored landscape with this in its display matrix. width and height
    # above are the upright ones; decode_frames turns PyAV's frames (decord turns its own).
    rotation: int = 0
    stream_index: int = 0  # the stream's index in the container

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps


def available_backends() -> tuple[str, ...]:
    """The concrete backends installed here, "auto"'s choice first (nothing is imported: see
    _import_decord)."""
    return ("pyav", "decord") if importlib.util.find_spec("decord") else ("pyav",)


def _import_decord():
    """decord, imported after av: decord loads its bundled FFmpeg libraries RTLD_GLOBAL, and its
    unversioned libvpx (6.4) then shadows PyAV's (measured: PyAV's libvpx-vp9 encoder fails to
    open when decord was imported first, works when av was)."""
    import av  # noqa: F401
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    return decord


def resolve_backend(backend: str) -> str:
    """"auto" -> the preferred available backend; a named one is checked to be importable."""
    if backend not in BACKENDS:
        raise InputError(f"unknown video backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    have = available_backends()
    if backend == "auto":
        return have[0]
    if backend not in have:
        raise InputError(
            f"the {backend} video backend is not installed (decord has wheels for x86-64 Linux and "
            f"Windows only); use --video-backend pyav or auto"
        )
    return backend


def _open(path: str):
    """av.open with every failure turned into one InputError line."""
    import av

    if not Path(path).exists():
        raise InputError(f"{path}: no such file; check the path")
    if Path(path).is_dir():
        raise InputError(f"{path} is a directory, not a video file")
    try:
        # Metadata (title, encoder...) is never used; a damaged byte in it must not stop the frames.
        return av.open(path, metadata_errors="replace")
    except av.error.PermissionError:
        raise InputError(f"{path} cannot be read (permission denied); check its permissions") from None
    except av.error.FFmpegError as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise InputError(
            f"{path}: not a readable video ({reason}); it may be truncated, corrupt or not a video; "
            f"{FIX_HINT}"
        ) from None
    except UnicodeDecodeError:  # text in the container the decoder still insists on reading
        raise InputError(f"{path}: the video's container holds damaged text (not UTF-8); {FIX_HINT}") from None


def _video_stream(container, path: str):
    """The first video stream that is not cover art (an "attached picture" of an audio file)."""
    import av

    moving = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if moving:
        if moving[0].codec_context is None:  # the codec id is unknown (a damaged header)
            raise InputError(f"{path}: the video stream's codec is unknown or its header is damaged; {FIX_HINT}")
        return moving[0]
    if container.streams.audio:
        raise InputError(f"{path} has only audio, no video stream; give a video file (or extract frames)")
    raise InputError(f"{path} has no video stream (a zero-length video, or its header is damaged); {FIX_HINT}")


def probe_video(path: str | Path) -> VideoProbe:
    """Demux (not decode) the first video stream: frame count, fps, size, real frame times."""
    import av

    path = str(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        stamps, keys, rotation = [], [], None
        try:
            for packet in container.demux(stream):
                if packet.size:
                    stamps.append(packet.pts if packet.pts is not None else packet.dts)
                    keys.append(packet.is_keyframe)
                if rotation is None:
                    rotation = _rotation(packet)
        except av.error.FFmpegError as e:
            log.warning("%s: demuxing stopped after %d frames (%s)", path, len(stamps), e)
        if not stamps:
            raise InputError(f"{path} contains no video frames (a zero-length video, or its index is damaged); "
                             f"{FIX_HINT}")
        probe = _probe_from_packets(path, stream, stamps, keys, rotation or 0)
        _check_complete(probe, stream.frames, container.duration)
        return probe


def _check_complete(probe: VideoProbe, header_frames: int, header_duration: int | None) -> None:
    """A file holding fewer frames than its index lists (mp4/mov) was cut short: an error. Where
    only the container duration says so (mkv/webm), warn: that duration may be a longer audio track."""
    if header_frames and header_frames > probe.frame_count:
        raise InputError(
            f"{probe.path} is truncated: its index lists {header_frames} frames but only "
            f"{probe.frame_count} are in the file; download it again, or re-encode what is there (e.g. with ffmpeg)"
        )
    if header_duration and header_duration / 1e6 > probe.duration + max(1.0, 0.1 * probe.duration):
        log.warning("%s: the header says %.1fs, the video frames cover %.1fs (truncated?)", probe.path,
                    header_duration / 1e6, probe.duration)


def _rotation(packet) -> int | None:
    """The display rotation carried by the first decoded frame (counter-clockwise degrees, a
    multiple of 90), None until the decoder gives a frame; a frame that fails to decode says 0."""
    import av

    try:
        frames = packet.decode()
    except av.error.FFmpegError:
        return 0
    return round(frames[0].rotation / 90) % 4 * 90 if frames else None


def _probe_from_packets(path: str, stream, stamps: list, keys: list[bool], rotation: int = 0) -> VideoProbe:
    n = len(stamps)
    timed = None not in stamps and len(set(stamps)) == n
    if timed:
        order = sorted(range(n), key=stamps.__getitem__)  # decode order -> presentation order
        pts = [stamps[i] for i in order]
        keyframes = tuple(j for j, i in enumerate(order) if keys[i])
        base = Fraction(stream.time_base)
        times = tuple(float((p - pts[0]) * base) for p in pts)
    else:  # no usable timestamps: frames in decode order at the nominal rate
        pts, keyframes, times = None, (0,), None
    rate = stream.average_rate or stream.guessed_rate
    if rate:
        fps = float(rate)
    elif timed and n > 1 and times[-1] > 0:
        fps = (n - 1) / times[-1]
    else:
        raise InputError(f"{path}: the video stream has no frame rate; {FIX_HINT}")
    if times is None:
        times = tuple(i / fps for i in range(n))
    width, height = stream.codec_context.width, stream.codec_context.height
    if rotation in (90, 270):
        width, height = height, width
    return VideoProbe(
        path=path, frame_count=n, fps=fps, width=width, height=height, codec=stream.codec_context.name,
        frame_times=times, keyframes=keyframes or (0,), pts=tuple(pts) if pts else None,
        stream_index=stream.index, rotation=rotation,
    )


def decode_frames(
    path: str | Path, indices: Sequence[int], *, backend: str = "auto", probe: VideoProbe | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Frames `indices` (any order, repeats allowed) as uint8 (F, H, W, 3) RGB.

    `transform` maps each decoded batch (b, H, W, 3) to (b, h, w, 3), e.g. a resize, so that
    long videos never hold all full-size frames at once.
    """
    path = str(path)
    probe = probe or probe_video(path)
    bad = [i for i in indices if not 0 <= i < probe.frame_count]
    if bad:
        raise InputError(f"{path}: frame {bad[0]} is out of range (the video has {probe.frame_count} frames)")
    if not len(indices):
        raise InputError(f"{path}: no frames were selected")
    wanted = sorted(set(int(i) for i in indices))
    backend = resolve_backend(backend)
    if backend == "decord" and probe.rotation in (90, 270):
        log.warning("%s is turned by %d degrees, which decord 0.6 decodes wrongly (a size mismatch at some "
                    "sizes); decoding it with PyAV", path, probe.rotation)
        backend = "pyav"
    if backend == "decord":
        frames = _decord_frames(path, probe, wanted)  # decord turns them upright itself
    else:
        frames = _pyav_frames(path, probe, wanted)
        if probe.rotation:
            frames = (np.rot90(f, probe.rotation // 90) for f in frames)  # upright, as players show it
    out = np.concatenate([transform(b) if transform else b for b in _batches(frames)])
    where = {i: k for k, i in enumerate(wanted)}
    return out[[where[int(i)] for i in indices]]


def _batches(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == BATCH:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _decode_failed(path: str, index: int, err: Exception) -> InputError:
    return InputError(f"{path}: corrupt or truncated video, decoding frame {index} failed ({err}); {FIX_HINT}")


def _pyav_frames(path: str, probe: VideoProbe, wanted: list[int]) -> Iterator[np.ndarray]:
    """Wanted frames (sorted) in order. Decodes forward; seeks to the keyframe before a wanted frame
    only when that skips more than SEEK_MIN_SKIP frames. Frames are identified by their pts (or
    by counting, for streams without timestamps)."""
    import av

    index_of = {p: i for i, p in enumerate(probe.pts)} if probe.pts else None
    container = _open(path)
    seeking, frames, pos = index_of is not None, None, -1
    try:
        for target in wanted:
            key = probe.keyframes[bisect.bisect_right(probe.keyframes, target) - 1]
            sought = seeking and key > 0 and key - pos > SEEK_MIN_SKIP
            if sought:
                log.debug("%s: seek to keyframe %d for frame %d", path, key, target)
                container.seek(probe.pts[key], stream=container.streams[probe.stream_index])
            if sought or frames is None:
                frames = _decoded(container, probe.stream_index)
            while True:
                frame = next(frames, None)
                if frame is None:
                    raise _decode_failed(path, target, "the stream ended early")
                pos = index_of.get(frame.pts, -1) if index_of else pos + 1
                if pos == target:
                    yield frame.to_ndarray(format="rgb24")
                    break
                if pos > target or pos < 0:  # the seek landed past the target: restart, no seeking
                    log.debug("%s: seek missed frame %d (got %d); decoding from the start", path, target, pos)
                    container.close()
                    container, seeking, pos = _open(path), False, -1
                    frames = _decoded(container, probe.stream_index)
                    index_of = None
    except av.error.FFmpegError as e:
        raise _decode_failed(path, pos + 1, e) from None
    finally:
        container.close()


def _decoded(container, index: int):
    stream = container.streams[index]
    if not stream.codec_context.is_open:
        stream.thread_type = "AUTO"  # frame + slice threads
    return container.decode(stream)


def _decord_frames(path: str, probe: VideoProbe, wanted: list[int]) -> Iterator[np.ndarray]:
    """Wanted frames via decord, in batches; it must count the frames the probe counted."""
    decord = _import_decord()
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0)
    except (RuntimeError, decord.DECORDError) as e:
        raise InputError(f"{path}: decord cannot read this video ({str(e).splitlines()[0][-120:]}); it may be "
                         f"truncated or corrupt; try --video-backend pyav") from None
    if len(reader) != probe.frame_count:
        raise InputError(f"{path}: decord counts {len(reader)} frames where the container has "
                         f"{probe.frame_count}; use --video-backend pyav")
    return _decord_batches(reader, path, wanted)


def _decord_batches(reader, path: str, wanted: list[int]) -> Iterator[np.ndarray]:
    decord = _import_decord()

    for k in range(0, len(wanted), BATCH):
        chunk = wanted[k:k + BATCH]
        try:
            yield from reader.get_batch(chunk).asnumpy()
        except (RuntimeError, decord.DECORDError) as e:
            raise _decode_failed(path, chunk[0], str(e).splitlines()[0]) from None
