"""Images: pixel values and grids equal to transformers' Glm4vImageProcessorPil, file formats, EXIF,
and a clear InputError for every kind of bad input (without decoding bombs)."""

import importlib.util
import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glmv_cli.errors import InputError
from glmv_cli.inputs.image import load_image, open_image, preprocess_image
from glmv_cli.inputs.patches import PatchSpec

SPEC = PatchSpec()  # GLM-4.1V's preprocessor_config.json: 12544 .. 9633792
SMALL = PatchSpec(max_pixels=200_000)  # a user's --max-pixels


@pytest.fixture(scope="module")
def reference():
    from transformers import Glm4vImageProcessorPil

    def run(image, spec=SPEC):
        size = {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}
        proc = Glm4vImageProcessorPil(size=size)
        out = proc(images=[image], return_tensors="np")
        return out["pixel_values"], tuple(int(x) for x in out["image_grid_thw"][0])

    return run


def assert_matches(reference, image, spec=SPEC):
    ours = preprocess_image(image, spec, source="x.png")
    values, grid = reference(image, spec)
    assert ours.kind == "image" and ours.grid_thw == grid
    rows = ours.rows()
    assert rows.dtype == np.float32 and rows.shape == values.shape == tuple(ours.pixel_values.shape)
    assert np.abs(rows - values).max() <= 1e-6
    assert ours.original_size == image.size and ours.source == "x.png"
    return ours


def noise(h, w, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


@pytest.mark.parametrize("h, w, spec", [
    (1, 1, SPEC), (10, 10, SPEC), (28, 28, SPEC), (37, 53, SPEC), (113, 97, SPEC),  # tiny and odd
    (20, 1000, SPEC), (10, 1500, SPEC), (1500, 10, SPEC),  # 1:50 and 1:150
    (336, 336, SPEC), (600, 800, SMALL), (3000, 4000, SPEC),  # over max_pixels: downscaled
])
def test_sizes_match_reference(reference, h, w, spec):
    ours = assert_matches(reference, Image.fromarray(noise(h, w)), spec)
    t, gh, gw = ours.grid_thw
    assert t == 1 and gh * gw * 14 * 14 * 2 <= max(spec.max_pixels, 2 * 28 * 28 * 4)


def test_tiny_image_is_upscaled_and_large_image_capped():
    assert preprocess_image(Image.new("RGB", (1, 1)), SPEC).grid_thw == (1, 6, 6)  # 84x84
    assert preprocess_image(Image.fromarray(noise(3000, 4000)), SPEC).grid_thw == (1, 134, 180)


def _modes():
    rgb = Image.fromarray(noise(45, 61))
    rgba = Image.fromarray(noise(45, 61, 4, seed=1))
    palette = rgb.convert("P")
    keyed = palette.copy()
    keyed.info["transparency"] = int(np.asarray(palette)[0, 0])
    rgb_key = rgb.copy()
    rgb_key.info["transparency"] = tuple(int(v) for v in np.asarray(rgb)[0, 0])
    gray = np.random.default_rng(2).integers(0, 256, (45, 61), dtype=np.uint8)
    return {
        "RGB": rgb, "RGBA": rgba, "LA": rgba.convert("LA"), "L": rgb.convert("L"), "1": rgb.convert("1"),
        "P": palette, "P+transparency": keyed, "PA": rgba.convert("PA"), "RGB+colour key": rgb_key,
        "CMYK": rgb.convert("CMYK"), "YCbCr": rgb.convert("YCbCr"),
        "I within 0..255": Image.fromarray(gray.astype(np.int32)), "F within 0..255": Image.fromarray(
            gray.astype(np.float32)),
    }


@pytest.mark.parametrize("mode", list(_modes()))
def test_modes_match_reference(reference, mode):
    image = _modes()[mode]
    assert_matches(reference, image)
    assert_matches(reference, image, SMALL)


def test_deep_grayscale_is_scaled_to_8_bits_not_clipped_white():
    """A 16-bit PNG (I;16), a 32-bit or float TIFF: the reference clips every value over 255 to white
    (a blank page for the model); here each shows as the 8-bit image it holds."""
    gray = np.random.default_rng(2).integers(0, 256, (45, 61), dtype=np.uint8)
    want = preprocess_image(Image.fromarray(gray, "L"), SPEC).rows()
    deep = {"I;16": Image.fromarray(gray.astype(np.uint16) * 257),
            "I;16B": Image.frombytes("I;16B", (61, 45), (gray.astype(">u2") * 257).tobytes()),
            "I (0..65535)": Image.fromarray(gray.astype(np.int32) * 257),
            "F (0..1)": Image.fromarray(gray.astype(np.float32) / 255)}
    for name, image in deep.items():
        assert np.array_equal(preprocess_image(image, SPEC).rows(), want), name
    clipped = Image.fromarray(gray.astype(np.uint16) * 257).convert("RGB")  # (what Pillow alone gives)
    assert np.asarray(clipped).min() == 255 or np.asarray(clipped).mean() > 250


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (28, 28), (10, 20, 30, 0))
    rows = preprocess_image(clear, SPEC).rows()
    white = (1 - np.asarray(SPEC.mean, np.float32)) / np.asarray(SPEC.std, np.float32)
    assert np.allclose(rows.reshape(-1, 3, 2 * 14 * 14)[:, :, 0], white, atol=1e-6)


PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "camera.png")  # camera: 8-bit grayscale


def _package_images():
    """Real photographs shipped in scikit-image's wheel (test extra), and plot PNGs that networkx
    and sympy (torch dependencies) ship: images not made by us."""
    found = []
    for package, folder, names in (("skimage", "data", PHOTOS), ("networkx", "drawing/tests/baseline", None),
                                   ("sympy", "plotting/tests", None)):
        spec = importlib.util.find_spec(package)
        if spec and spec.origin:
            base = Path(spec.origin).parent / folder
            found += [base / n for n in names] if names else sorted(base.glob("*.png"))[:2]
    return [p for p in found if p.is_file()]


def test_the_test_extra_ships_real_photographs():
    assert {p.name for p in _package_images()} >= set(PHOTOS), "pip install -e '.[test]' brings scikit-image"


@pytest.mark.parametrize("path", _package_images(), ids=lambda p: p.name)
def test_real_images_from_installed_packages(reference, path):
    image = open_image(path)
    assert_matches(reference, image)
    assert load_image(path, SPEC).grid_thw == preprocess_image(image, SPEC).grid_thw


# -- file formats ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, lossless", [("PNG", True), ("BMP", True), ("TIFF", True),
                                           ("WEBP", False), ("JPEG", False)])
def test_formats(tmp_path, fmt, lossless):
    image = Image.fromarray(noise(30, 50))
    path = tmp_path / f"img.{fmt.lower()}"
    image.save(path, fmt)
    opened = open_image(path)
    expected = image if lossless else Image.open(path).convert("RGB")
    assert opened.size == (50, 30) and np.array_equal(np.asarray(opened.convert("RGB")), np.asarray(expected))
    from_bytes = open_image(path.read_bytes(), name="-")
    assert np.array_equal(np.asarray(from_bytes), np.asarray(opened))


def test_gif_uses_the_first_frame(tmp_path, reference):
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    opened = open_image(path)
    assert np.asarray(opened.convert("RGB"))[5, 5].tolist() == [255, 0, 0]
    assert_matches(reference, opened)


@pytest.mark.parametrize("name", ["phone.jpg", "IMG_0001.HEIC"])
def test_phone_photos_are_read_upright(tmp_path, name):
    """The EXIF rotation phones record; a HEIC (encoded by pillow-heif's libheif, as iPhones take
    them) is turned once, not twice."""
    pixels = np.zeros((24, 48, 3), np.uint8)
    pixels[:, :24] = (255, 0, 0)  # left half red
    pixels[:, 24:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / name
    if name.endswith(".HEIC"):
        import pillow_heif

        pillow_heif.from_pillow(Image.fromarray(pixels)).save(path, quality=95, exif=exif.tobytes())
    else:
        Image.fromarray(pixels).save(path, "JPEG", exif=exif, quality=95)
    for source in (path, path.read_bytes()):
        opened = np.asarray(open_image(source, name=name).convert("RGB")).astype(int)
        assert opened.shape == (48, 24, 3)  # upright: taller than wide
        assert opened[5, 12, 0] > 200 and opened[5, 12, 2] < 60  # the left half is now on top
        assert opened[43, 12, 2] > 200 and opened[43, 12, 0] < 60
    assert load_image(path, SPEC).original_size == (24, 48)


@pytest.mark.skipif(not importlib.util.find_spec("pillow_heif"), reason="needs pillow-heif")
def test_heic_and_avif_share_a_container_and_are_told_apart(tmp_path):
    """An AVIF whose major brand is the generic "mif1" (HEIC's too) after a HEIC in the same process
    (pillow-heif registered, and it claims mif1 files but has no AV1 decoder)."""
    import pillow_heif
    from PIL import features

    from glmv_cli.app.attachments import from_path

    heic = tmp_path / "a.heic"
    pillow_heif.from_pillow(Image.new("RGB", (40, 30), (0, 0, 255))).save(heic)
    assert open_image(heic).convert("RGB").getpixel((5, 5))[2] > 200
    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    avif = tmp_path / "b.avif"
    Image.new("RGB", (40, 30), (0, 200, 0)).save(avif, quality=95)
    data = bytearray(avif.read_bytes())
    assert data[8:12] == b"avif" and b"mif1" in data[16:32]
    data[8:12] = b"mif1"
    avif.write_bytes(bytes(data))
    assert from_path(avif).mime == "image/avif" and from_path(heic).mime == "image/heic"
    assert open_image(avif).convert("RGB").getpixel((5, 5))[1] > 150


def test_heic_without_pillow_heif_says_what_to_install(tmp_path, monkeypatch):
    import pillow_heif

    path = tmp_path / "photo.heic"
    pillow_heif.from_pillow(Image.new("RGB", (8, 8))).save(path)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as if not installed
    with pytest.raises(InputError, match=r"photo\.heic is a HEIC/HEIF photo, which needs pillow-heif: pip install"):
        open_image(path)


# -- bad input ------------------------------------------------------------------------------------

def png_header(width, height):
    """A PNG that only claims a size: signature + IHDR (+ IEND), no pixel data at all."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match=r"nope\.png: no such file; check the path"):
        open_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="is a directory, not an image"):
        open_image(tmp_path)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("just some text, not pixels\n")
    with pytest.raises(InputError, match=r"notes\.png is not an image Pillow can read"):
        open_image(path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.jpg is empty"):
        open_image(tmp_path / "empty.jpg")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt):
    buf = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match=r"cut\.\w+ could not be decoded .*truncated or corrupt"):
        open_image(path)


def test_decompression_bomb_refused_from_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(30000, 30000))
    saved = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InputError, match=r"bomb\.png is 30000x30000 \(900 megapixels\), over the "
                                         r"200-megapixel limit for one image; downscale it first"):
        open_image(path)
    assert saved == Image.MAX_IMAGE_PIXELS  # Pillow's own check is restored
    small = io.BytesIO()
    Image.new("RGB", (100, 100)).save(small, "PNG")
    with pytest.raises(InputError, match=r"stdin is 100x100 \(0.01 megapixels\), over the 0.005-megapixel"):
        open_image(small.getvalue(), pixel_limit=5000)


def test_limit_is_ours_not_pillows(tmp_path):
    """Raised above Pillow's 179 MP refusal, our limit decides: this header-only 225 MP file gets
    past the size check and fails later, as truncated, instead of with Pillow's bomb error."""
    path = tmp_path / "big.png"
    path.write_bytes(png_header(15000, 15000))
    with pytest.raises(InputError, match="could not be decoded"):
        open_image(path, pixel_limit=300_000_000)


def test_aspect_ratio_over_200_is_refused(tmp_path):
    path = tmp_path / "strip.png"
    Image.new("RGB", (28 * 210, 28)).save(path)
    with pytest.raises(InputError, match=r"strip\.png \(5880x28\): aspect ratio 210:1 is beyond the "
                                         r"model's 200:1 limit; crop the image or split it into parts"):
        load_image(path, SPEC)
