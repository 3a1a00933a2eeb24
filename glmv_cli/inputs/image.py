"""Image files -> upright PIL images -> model-ready patches, as transformers' Glm4vImageProcessorPil.

`open_image` reads anything Pillow opens (PNG, JPEG, WebP, AVIF, GIF's first frame, BMP, TIFF,
...), HEIC (pillow-heif) and SVG (rendered by inputs/svg.py), from a path or from bytes (stdin),
refuses decompression bombs from the header alone, and applies the EXIF orientation.
`preprocess_image` then does what the reference does with a PIL image: RGB conversion
(transparency composited onto white), smart_resize, PIL bicubic resize of the uint8 image, rescale
+ CLIP normalisation, patchify.
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from glmv_cli.errors import InputError
from glmv_cli.inputs.brands import image_kind
from glmv_cli.inputs.patches import PatchSpec, image_codes, level_table, smart_resize
from glmv_cli.inputs.svg import is_svg, render_svg
from glmv_cli.inputs.visual import VisualInput

log = logging.getLogger(__name__)

# Refuse images above this many pixels before decoding them. A 200-megapixel RGB image already
# takes ~0.8 GB decoded (Pillow keeps 4 bytes per RGB pixel) and the pipeline holds a few copies.
DEFAULT_PIXEL_LIMIT = 200_000_000

# What a truncated or corrupt file raises inside Pillow's decoders.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, RuntimeError,
                  Image.DecompressionBombError)  # RuntimeError: pillow-heif's (libheif) failures
_EXIF_ORIENTATION = 0x0112


@contextmanager
def _own_bomb_check() -> Iterator[None]:
    """Switch Pillow's decompression-bomb check off while we apply our own (configurable) limit.

    Pillow warns above 89 MP and raises above 179 MP, with a message that names none of our
    options; our check on the header size replaces it. Not thread-safe (a module global).
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _read_source(source: str | Path | bytes, label: str) -> bytes:
    if isinstance(source, bytes):
        return source
    path = Path(source)
    if path.is_dir():
        raise InputError(f"{label} is a directory, not an image; name an image file inside it")
    if not path.exists():
        raise InputError(f"{label}: no such file; check the path")
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"{label} cannot be read ({e.strerror or e}); check its permissions") from None


def open_image(source: str | Path | bytes, *, name: str = "",
               pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> Image.Image:
    """Decode one image (first frame of an animation), EXIF orientation applied, in its own mode.

    `source` is a path or the file's bytes (stdin); `name` is what messages call it. Images with
    more than `pixel_limit` pixels are refused from the header, before any pixel is decoded.
    """
    label = name or ("stdin" if isinstance(source, bytes) else str(source))
    data = _read_source(source, label)
    if not data:
        raise InputError(f"{label} is empty; give an image file")
    if is_svg(data[:4096]):
        return render_svg(data, label)
    still = image_kind(data[:256])
    if still == "heic":
        _register_heif(label)
    # HEIC and AVIF share a container: name the plugin, or pillow-heif (once registered) takes AVIF too
    formats = {"heic": ["HEIF"], "avif": ["AVIF"]}.get(still)
    with _own_bomb_check():
        try:
            image = Image.open(io.BytesIO(data), formats=formats)
        except UnidentifiedImageError:
            raise InputError(f"{label} is not an image Pillow can read (PNG, JPEG, WebP, GIF, BMP, "
                             f"TIFF, ...); check the file or convert it") from None
        except _DECODE_ERRORS as e:
            raise InputError(
                f"{label} has a broken image header ({e}); re-export or re-download it"
            ) from None
        width, height = image.size
        if width * height > pixel_limit:
            raise InputError(
                f"{label} is {width}x{height} ({width * height / 1e6:.3g} megapixels), over the "
                f"{pixel_limit / 1e6:.3g}-megapixel limit for one image; downscale it first"
            )
        if width == 0 or height == 0:
            raise InputError(f"{label} has no pixels ({width}x{height}); check the file")
        try:
            image.load()
        except _DECODE_ERRORS as e:
            raise InputError(f"{label} could not be decoded ({e}): the file is truncated or corrupt; "
                             f"re-export or re-download it") from None
        return _upright(image, label)


def _register_heif(label: str) -> None:
    """Teach Pillow HEIC, which it cannot read (AVIF it can). pillow-heif applies the HEIF rotation
    itself and resets the EXIF orientation to 1, so _upright does not turn the photo twice."""
    try:
        import pillow_heif
    except ImportError:
        raise InputError(f"{label} is a HEIC/HEIF photo, which needs pillow-heif: pip install pillow-heif "
                         f"(or convert it to JPEG)") from None
    pillow_heif.register_heif_opener()


def _upright(image: Image.Image, label: str) -> Image.Image:
    """Apply the EXIF orientation tag (no copy when there is none); a malformed EXIF block is
    logged and ignored."""
    try:
        if image.getexif().get(_EXIF_ORIENTATION, 1) not in range(2, 9):
            return image
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, struct.error) as e:
        log.warning("%s: ignoring unreadable EXIF orientation (%s)", label, e)
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB as transformers' `convert_to_rgb`: anything with alpha (an A band, or a palette or
    colour-key `transparency`) is composited onto opaque white; everything else goes through
    Pillow's own convert("RGB"). Except 16-bit, 32-bit and float grayscale (a 16-bit PNG, a
    scientific TIFF, a depth map), which Pillow and so the reference clip to 0..255, so that any
    pixel over 255 is white and the model sees a blank page: they are scaled to 8 bits first."""
    if image.mode in _DEEP_GRAY:
        image = _eight_bit(image)
    if image.mode == "RGB" and image.info.get("transparency") is None:
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


_DEEP_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _eight_bit(image: Image.Image) -> Image.Image:
    """Grayscale of more than 8 bits -> "L": 16-bit modes by their full range (65535 -> 255); 32-bit
    and float ones by the range their values use (0..1, 0..255, 0..65535, else their maximum),
    negative values clipped to black."""
    values = np.asarray(image, dtype=np.float64)
    peak = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16"):
        top = 65535.0
    else:
        top = next((t for t in (1.0, 255.0, 65535.0) if peak <= t), peak)
    return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")


def preprocess_image(image: Image.Image, spec: PatchSpec, *, source: str = "") -> VisualInput:
    """One PIL image (any mode) -> its patch rows (gh*gw, 3*T*p*p), as uint8 levels that the model
    expands on its own device (PatchCodes), and grid (1, gh, gw)."""
    rgb = to_rgb(image)
    width, height = rgb.size
    T = spec.temporal_patch_size
    try:
        new_h, new_w = smart_resize(T, height, width, temporal_factor=T, factor=spec.factor,
                                    min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    except InputError as e:
        raise InputError(f"{source or 'image'} ({width}x{height}): {e}") from None
    except ZeroDivisionError:
        raise InputError(f"{source or 'image'} ({width}x{height}) has no pixels") from None
    if (new_w, new_h) != (width, height):
        rgb = rgb.resize((new_w, new_h), Image.Resampling.BICUBIC)
    import torch

    from glmv_cli.model.patch_codes import PatchCodes

    codes, grid = image_codes(np.asarray(rgb), spec)  # (gh*gw, 3, 1, p*p), (1, gh, gw)
    pixels = PatchCodes(torch.from_numpy(codes), torch.from_numpy(level_table(spec)), T)
    return VisualInput("image", pixels, grid, source=source, original_size=(width, height))


def load_image(source: str | Path | bytes, spec: PatchSpec, *, name: str = "",
               pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> VisualInput:
    """open_image + preprocess_image: a file (or stdin bytes) straight to model-ready patches."""
    label = name or ("stdin" if isinstance(source, bytes) else str(source))
    return preprocess_image(open_image(source, name=label, pixel_limit=pixel_limit), spec, source=label)
