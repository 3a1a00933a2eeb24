"""SVG images -> pixels, rendered by PyMuPDF (already a dependency for PDFs; no cairo needed).

Diagrams, charts and logos are often SVG; read as text the model would see XML, not the picture.
A vector image has no pixel size of its own, so it is rendered at its stated size, scaled up to at
least MIN_RENDER_PIXELS (an icon's text stays legible after resizing) and down to at most
MAX_RENDER_PIXELS (a huge width="100000" would otherwise be a decompression bomb); the usual image
preprocessing then fits it to the model. Transparent areas come out white, as for other images.
MuPDF loads nothing outside the file (an <image href="file:///..."> is left out, with a warning),
so an SVG sent to `glmv serve` cannot show the model the server's files.
"""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING

from glmv_cli.errors import InputError
from glmv_cli.inputs.mupdf import quiet

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

MIN_RENDER_PIXELS = 1024 * 1024
MAX_RENDER_PIXELS = 16_000_000  # above the checkpoints' max_pixels (9.6 MP): the resize decides

# The root element, after an optional BOM, XML declaration, comments and doctype (with its internal
# subset: Illustrator declares entities there).
_ROOT = re.compile(rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?"
                   rb"(?:(?:<!--.*?-->|<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>)\s*)*<svg[\s>/]", re.DOTALL | re.IGNORECASE)


def is_svg(head: bytes) -> bool:
    """Whether a file's first bytes are an SVG document (its root element is <svg>)."""
    return bool(_ROOT.match(head))


def render_svg(data: bytes, label: str) -> Image.Image:
    """An SVG document -> an RGB image on white, sized as the module docstring says."""
    from PIL import Image

    pymupdf = quiet()  # nothing on stdout; what MuPDF says is logged below
    pymupdf.TOOLS.mupdf_warnings(reset=True)
    try:
        doc = pymupdf.open(stream=data, filetype="svg")
    except (pymupdf.FileDataError, RuntimeError, ValueError) as e:
        raise InputError(f"{label} is not an SVG MuPDF can render ({e}); check the file or export it as PNG") from None
    with doc:
        page = doc[0]
        width, height = page.rect.width, page.rect.height
        if width < 1 or height < 1:
            raise InputError(f"{label} has no size ({width:g}x{height:g}); give the <svg> element a width and "
                             f"height or a viewBox")
        area = width * height
        scale = math.sqrt(min(max(area, MIN_RENDER_PIXELS), MAX_RENDER_PIXELS) / area)
        pixmap = page.get_pixmap(matrix=pymupdf.Matrix(scale, scale), alpha=False)
    said = pymupdf.TOOLS.mupdf_warnings(reset=True)
    if said:
        lines = [line for line in said.splitlines() if not line.startswith("... repeated")]
        log.warning("%s: %s", label, "; ".join(dict.fromkeys(lines)))
    return Image.frombytes("RGB", (pixmap.width, pixmap.height), pixmap.samples)
