"""Real test media made in the test session: videos encoded with PyAV, PDFs written with PyMuPDF.

Every video frame shows a gradient that drifts with the frame index plus a bright bar whose
position encodes the index, so frames are told apart after lossy coding. PDFs carry a line of
text per page ("page N") so the text layer and the page order can be checked.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def frame_pixels(i: int, width: int, height: int) -> np.ndarray:
    """Frame `i` as uint8 (height, width, 3) RGB: drifting gradients and a bar at column ~ i."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 3 + i * 5) % 256, (y * 4 + i * 3) % 256, (x + y + i * 11) % 256], axis=-1)
    bar = (i * 7) % max(width - 4, 1)
    rgb[:, bar:bar + 4] = 255
    return rgb.astype(np.uint8)


def encode_video(
    path: Path, *, frames: int, fps: float | Fraction, size: tuple[int, int] = (64, 48),
    codec: str = "libx264", gop: int | None = None, preset: str | None = None, rotation: int = 0,
) -> Path:
    """Encode `frames` frames at `fps` with `codec` (container from the suffix); returns `path`.

    `gop` sets the keyframe interval; `preset` the x264 speed preset; `rotation` the display
    matrix's counter-clockwise degrees (a phone's portrait video: stored landscape). libvpx encoders fail to open
    once decord has been imported before av (see glmv_cli/inputs/video_decode.py); import av first.
    """
    import av

    width, height = size
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        options = {"preset": preset} if preset and codec == "libx264" else {}
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(i, width, height), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if frames == 0:
            container.start_encoding()
    return Path(path)


def encode_audio(path: Path, *, seconds: float = 1.0, codec: str = "aac", rate: int = 16000,
                 cover: bool = False) -> Path:
    """An audio-only file (a quiet 440 Hz tone): .m4a with aac, .mka with libopus or flac, .mp3
    with libmp3lame. `cover` adds album art, a one-frame mjpeg stream flagged attached_pic (mp3)."""
    import av

    kinds = {"fltp": np.float32, "flt": np.float32, "s16": np.int16, "s16p": np.int16, "s32p": np.int32}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        if cover:
            art = container.add_stream("mjpeg", rate=1)
            art.width, art.height, art.pix_fmt = 64, 48, "yuvj420p"
            art.disposition = av.stream.Disposition.attached_pic
            picture = av.VideoFrame.from_ndarray(frame_pixels(0, 64, 48), format="rgb24")
            container.mux(art.encode(picture.reformat(format="yuvj420p")))
            container.mux(art.encode())
        fmt = stream.codec_context.format.name
        step = stream.codec_context.frame_size or 1024
        n = int(seconds * rate)
        tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)
        scale = {np.int16: 32767, np.int32: 2**31 - 1}.get(kinds[fmt], 1)
        for k in range(0, n - step + 1, step):
            chunk = (tone[None, k:k + step] * scale).astype(kinds[fmt])
            frame = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, k
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return Path(path)


def truncate(path: Path, out: Path, fraction: float = 0.5) -> Path:
    """Copy the first `fraction` of a file's bytes (a download cut short)."""
    data = Path(path).read_bytes()
    Path(out).write_bytes(data[: int(len(data) * fraction)])
    return Path(out)


def write_pdf(
    path: Path, pages: list[tuple[float, float]] | int = 1, *, rotations: dict[int, int] | None = None,
    user_password: str | None = None, owner_password: str | None = None,
) -> Path:
    """A PDF whose page i (0-based) has size pages[i] in points, text "page {i+1}" and a blue box.

    `pages` may be a count of A4 pages. `rotations` maps a 0-based page to 90/180/270.
    With passwords the file is AES-256 encrypted.
    """
    import pymupdf

    sizes = [(595.0, 842.0)] * pages if isinstance(pages, int) else list(pages)
    doc = pymupdf.open()
    for i, (w, h) in enumerate(sizes):
        page = doc.new_page(width=w, height=h)
        page.insert_text((36, 72), f"page {i + 1}", fontsize=24)
        page.draw_rect(pymupdf.Rect(36, 100, 36 + w / 4, 100 + h / 8), color=(0, 0, 1), fill=(0, 0, 1))
        if rotations and i in rotations:
            page.set_rotation(rotations[i])
    kwargs = {}
    if user_password or owner_password:
        kwargs = dict(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw=user_password or "",
                      owner_pw=owner_password or "", permissions=pymupdf.PDF_PERM_PRINT)
    doc.save(str(path), **kwargs)
    doc.close()
    return Path(path)


def write_empty_pdf(path: Path) -> Path:
    """A well-formed PDF with zero pages, written byte by byte with an exact xref table
    (PyMuPDF refuses to save a document without pages)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    Path(path).write_bytes(bytes(out))
    return Path(path)
