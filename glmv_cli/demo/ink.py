"""Where each digit, or each shape, lies in an image: labels for the training's auxiliary vision loss.

Up to the fourth demo checkpoint, two-digit numbers stayed near 19% while single digits reached
~88%, and a linear probe of that checkpoint's merged vision features told a token's digit 37% of
the time and the left digit's tokens from the right one's 55% (chance 50%): trained only through
the decoder, the tower never learnt features that keep two neighbouring digits apart. So the
training also asks the tower directly: every merged image token of a number image gets a class
(CLASSES) - background, the only digit d, the left digit d, the right digit d - and a linear head
on the tower's output (the features the decoder sees) is trained to name it (train.py,
`--ink-loss`). The head is not part of the checkpoint; inference is unchanged. With it (weight
0.3) the same probe reads 56% and 95%, and two-digit numbers went to 58% and 83% on two held-out
draws (README).

Counting failed the same way: of the fifth checkpoint's counting errors, most listed one shape of
the picture twice. So shape images can be labelled too (`--shape-ink`), aimed at instances: the
one token that holds a shape's centre is named with its kind and colour (CENTRES), the shape's
other tokens are its body (BODY), so that the tower marks each object once. At the digits' weight
it lifted counting from 78% to 89% over two held-out draws, and cost numbers more (78% to 52%,
left and right digits swapped): the small tower shares its capacity between the two. At half
that weight (the default, the sixth checkpoint) counting reached 81% and numbers 82%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = 0  # classes 1-30: only digit 0-9 (1-10), left digit 0-9 (11-20), right digit 0-9 (21-30)
BODY = 31  # a token of a shape that does not hold its centre
CENTRES = 32  # + one of SHAPE_NAMES (kind x colour): the token that holds a shape's centre
SHAPE_NAMES = 18
CLASSES = CENTRES + SHAPE_NAMES
DIGIT_CLASSES = BODY  # the classes of number images alone
MIN_INK = 0.05  # share of a merged token's pixels that one class must cover to label it (40 of 28 x 28)


@dataclass(frozen=True)
class Ink:
    """What an image shows where, for training only: a (height, width) uint8 class per pixel, and
    points (x, y, class) in pixels whose token takes that class whatever else covers it."""

    pixels: np.ndarray
    centres: tuple[tuple[float, float, int], ...] = ()


def digit_class(text: str, position: int) -> int:
    """The class of the `position`-th digit of `text` (one or two digits)."""
    digit = int(text[position])
    return 1 + digit if len(text) == 1 else 11 + 10 * position + digit


def digit_map(text: str, font: ImageFont.FreeTypeFont, xy: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(height, width) uint8 classes of the pixels that `text`, drawn at `xy` in `font` on an image
    of `size` (width, height), inks: each digit drawn alone where the whole text draws it."""
    width, height = size
    classes = np.zeros((height, width), np.uint8)
    for position, char in enumerate(text):
        mask = Image.new("L", size, 0)
        ImageDraw.Draw(mask).text((xy[0] + font.getlength(text[:position]), xy[1]), char, fill=255, font=font)
        classes[np.asarray(mask) > 127] = digit_class(text, position)
    return classes


def centre_class(name: int) -> int:
    """The class of the token holding the centre of a shape of kind-and-colour index `name`."""
    if not 0 <= name < SHAPE_NAMES:
        raise ValueError(f"shape name index {name} is not in 0..{SHAPE_NAMES - 1}")
    return CENTRES + name


def token_labels(ink: Ink, grid: tuple[int, int, int], merge: int, patch: int) -> np.ndarray:
    """One class per merged token of an image of patch grid (t, h, w), in the vision tower's output
    order (rows of merged tokens): the class that covers most of the token if it covers at least
    MIN_INK of its pixels, else background; then each centre's class on the token holding it. The
    map is resized as the processor resizes the image."""
    _, h, w = grid
    side = merge * patch
    rows, cols = h // merge, w // merge
    height, width = ink.pixels.shape
    resized = np.asarray(Image.fromarray(ink.pixels).resize((cols * side, rows * side), Image.NEAREST))
    blocks = resized.reshape(rows, side, cols, side).transpose(0, 2, 1, 3).reshape(rows * cols, side * side)
    present = [c for c in np.unique(blocks) if c != BACKGROUND]
    labels = np.full(rows * cols, BACKGROUND, np.int64)
    if present:
        counts = np.stack([(blocks == c).sum(1) for c in present], 1)  # (tokens, classes present)
        best = np.asarray(present, np.int64)[counts.argmax(1)]
        labels = np.where(counts.max(1) >= MIN_INK * side * side, best, BACKGROUND)
    for x, y, cls in ink.centres:
        labels[min(int(y * rows / height), rows - 1) * cols + min(int(x * cols / width), cols - 1)] = cls
    return labels
