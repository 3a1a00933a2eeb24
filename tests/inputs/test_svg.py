"""SVG images: found from their content, rendered by PyMuPDF at a legible size, preprocessed like any
image; a broken or sizeless SVG is a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from glmv_cli.app import attachments as att
from glmv_cli.errors import InputError
from glmv_cli.inputs.image import load_image, open_image
from glmv_cli.inputs.patches import PatchSpec
from glmv_cli.inputs.svg import MAX_RENDER_PIXELS, MIN_RENDER_PIXELS, is_svg

# A 120x80 diagram: a green disc left, a transparent right half (white once rendered), a red bar.
DIAGRAM = b"""<?xml version="1.0" encoding="UTF-8"?>
<!-- exported by a drawing program -->
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80" viewBox="0 0 120 80">
  <circle cx="30" cy="40" r="20" fill="#00c000"/>
  <rect x="70" y="70" width="50" height="10" fill="#ff0000"/>
</svg>
"""


def test_svg_is_found_from_its_root_element():
    assert is_svg(DIAGRAM) and is_svg(b'\xef\xbb\xbf<svg xmlns="http://www.w3.org/2000/svg"/>')
    assert not is_svg(b"<!DOCTYPE html><html><body><svg></svg></body></html>")  # a page with an inline svg
    assert not is_svg(b"<svgx/>") and not is_svg(b"svg")
    assert att.from_bytes(DIAGRAM).mime == "image/svg+xml"  # no name needed (stdin, a data: URL)
    assert att.from_bytes(DIAGRAM, name="diagram.svg").kind == "image"


def test_entities_in_the_doctype(tmp_path):
    """Illustrator declares entities in the doctype's internal subset; nested ones (a "billion
    laughs") are not expanded into gigabytes."""
    illustrator = (b'<?xml version="1.0" encoding="utf-8"?>\n<!-- Generator: Adobe Illustrator -->\n'
                   b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"\n'
                   b'  "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd" [\n'
                   b'\t<!ENTITY ns_svg "http://www.w3.org/2000/svg">\n]>\n'
                   b'<svg xmlns="&ns_svg;" width="40" height="40"><rect width="20" height="40" fill="#0000ff"/></svg>')
    assert is_svg(illustrator) and att.from_bytes(illustrator).kind == "image"
    pixels = np.asarray(open_image(illustrator))
    assert list(pixels[512, 100]) == [0, 0, 255] and list(pixels[512, 900]) == [255, 255, 255]
    entities = '<!ENTITY a0 "lol">' + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
    laughs = (f'<?xml version="1.0"?><!DOCTYPE svg [{entities}]><svg xmlns="http://www.w3.org/2000/svg" '
              f'width="50" height="50"><text x="1" y="20">&a9;</text></svg>').encode()
    assert is_svg(laughs) and open_image(laughs).size == (1024, 1024)


def test_rendered_at_a_legible_size_with_its_colours_in_place(tmp_path):
    path = tmp_path / "diagram.svg"
    path.write_bytes(DIAGRAM)
    image = open_image(path)
    assert image.mode == "RGB" and image.width / image.height == pytest.approx(1.5, abs=0.01)
    assert image.width * image.height == pytest.approx(MIN_RENDER_PIXELS, rel=0.01)  # a small icon is scaled up
    pixels = np.asarray(image).astype(int)
    s = image.width / 120
    assert list(pixels[int(40 * s), int(30 * s)]) == [0, 192, 0]  # the disc's centre
    assert list(pixels[int(20 * s), int(100 * s)]) == [255, 255, 255]  # transparent -> white
    assert list(pixels[int(75 * s), int(95 * s)]) == [255, 0, 0]  # the bar
    visual = load_image(path, PatchSpec())
    gt, gh, gw = visual.grid_thw
    assert visual.original_size == image.size and gt == 1 and gw / gh == pytest.approx(1.5, abs=0.1)


def test_a_huge_stated_size_is_capped_not_a_bomb():
    image = open_image(b'<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="50000"/>')
    assert image.width * image.height <= MAX_RENDER_PIXELS * 1.001  # MuPDF rounds the edges out
    assert image.width == pytest.approx(2 * image.height, abs=2)


def test_files_outside_the_svg_are_not_loaded(tmp_path, caplog, capfd):
    """An <image> pointing at a local file (an SVG sent to `glmv serve` could name the server's) is
    left out, with a warning in the log, not a MuPDF line on stdout (where PyMuPDF prints it)."""
    secret = tmp_path / "secret.png"
    Image.new("RGB", (50, 50), (255, 0, 0)).save(secret)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="50" height="50"><image href="{secret.as_uri()}" '
           f'width="50" height="50"/></svg>').encode()
    image = open_image(svg, name="logo.svg")
    assert np.asarray(image).min() == 255  # white: the red file is not in it
    assert "logo.svg: svg: ignoring external image" in caplog.text and "repeated" not in caplog.text
    printed = capfd.readouterr()
    assert "ignoring" not in printed.out + printed.err  # stdout is the answer's alone


@pytest.mark.parametrize("data,message", [
    (b"<svg><rect", r"broken\.svg is not an SVG MuPDF can render .*export it as PNG"),
    (b'<svg xmlns="http://www.w3.org/2000/svg" width="0" height="0"/>', r"broken\.svg has no size .*viewBox"),
])
def test_broken_svgs_are_one_line_errors(data, message):
    with pytest.raises(InputError, match=message):
        open_image(data, name="broken.svg")
