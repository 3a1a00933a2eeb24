"""Grounding boxes: GLM-4.1V writes them as [x1, y1, x2, y2] on a 0-1000 scale of the image,
usually inside <|begin_of_box|>..<|end_of_box|> and often doubled ([[x1,y1,x2,y2]]).

`find_boxes(answer_with_markers)` finds them: every quadruple of numbers inside a box span, and
`[[...]]`-style quadruples anywhere (a list of boxes). `to_pixels` maps a box onto an image of
(width, height); `draw_boxes` draws them on a copy of the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from glmv_cli.stream import BOX, END_BOX

SCALE = 1000
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_QUAD = re.compile(r"\[" + ",".join([_NUM] * 4) + r"\]")
_LIST = re.compile(r"\[\s*(\[[^\[\]]*\]\s*,?\s*)+\]")
_SPAN = re.compile(re.escape(BOX) + r"(.*?)(?:" + re.escape(END_BOX) + r"|$)", re.DOTALL)


@dataclass(frozen=True)
class Box:
    """One box on the model's 0-1000 scale (x1, y1, x2, y2), and the text it was found in."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def coords(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    def to_pixels(self, width: int, height: int) -> list[int]:
        """[x1, y1, x2, y2] in pixels of a width x height image, ordered and clamped to it."""
        xs = sorted(min(max(round(v * width / SCALE), 0), width) for v in (self.x1, self.x2))
        ys = sorted(min(max(round(v * height / SCALE), 0), height) for v in (self.y1, self.y2))
        return [xs[0], ys[0], xs[1], ys[1]]


def _quads(text: str) -> list[Box]:
    boxes = []
    for m in _QUAD.finditer(text):
        values = [float(v) for v in m.groups()]
        if all(0 <= v <= SCALE for v in values):
            boxes.append(Box(*values))
    return boxes


def find_boxes(text: str) -> list[Box]:
    """Boxes in an answer that still has its box markers; each box once, in order of appearance."""
    found: list[tuple[int, Box]] = []
    for span in _SPAN.finditer(text):
        found += [(span.start(), b) for b in _quads(span.group(1))]
    for lst in _LIST.finditer(_SPAN.sub(" ", text)):  # [[..],[..]] outside the box spans
        found += [(lst.start() + len(text), b) for b in _quads(lst.group(0))]
    return list(dict.fromkeys(b for _, b in sorted(found, key=lambda item: item[0])))


def boxes_json(boxes: list[Box], images: list[tuple[str, tuple[int, int]]]) -> list[dict]:
    """For --json: each box on the 0-1000 scale and in pixels of every input image
    (source, (width, height)); the model does not say which image a box belongs to."""
    return [{"box": b.coords,
             "pixels": [{"image": source, "box": b.to_pixels(*size)} for source, size in images if size[0]]}
            for b in boxes]


def draw_boxes(image, boxes: list[Box], *, width: int | None = None):
    """A copy of the PIL `image` (RGB) with `boxes` outlined in red and numbered."""
    from PIL import ImageDraw

    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    line = width or max(2, round(min(out.size) / 200))
    for k, box in enumerate(boxes, start=1):
        x1, y1, x2, y2 = box.to_pixels(*out.size)
        draw.rectangle([x1, y1, x2, y2], outline=(255, 0, 0), width=line)
        draw.text((x1 + line + 1, y1 + line), str(k), fill=(255, 0, 0))
    return out
