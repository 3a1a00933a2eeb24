"""Where each digit's ink lies in a number image: labels for the training's auxiliary vision loss.

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
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = 0
CLASSES = 31  # background; only digit 0-9 (1-10); left digit 0-9 (11-20); right digit 0-9 (21-30)
MIN_INK = 0.05  # share of a merged token's pixels that one digit must cover to label it (40 of 28 x 28)


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


def token_labels(classes: np.ndarray, grid: tuple[int, int, int], merge: int, patch: int) -> np.ndarray:
    """One class per merged token of an image of patch grid (t, h, w), in the vision tower's output
    order (rows of merged tokens): the class that covers most of the token if it covers at least
    MIN_INK of its pixels, else background. The map is resized as the processor resizes the image."""
    _, h, w = grid
    side = merge * patch
    rows, cols = h // merge, w // merge
    resized = np.asarray(Image.fromarray(classes).resize((cols * side, rows * side), Image.NEAREST))
    blocks = resized.reshape(rows, side, cols, side).transpose(0, 2, 1, 3).reshape(rows * cols, side * side)
    counts = np.stack([(blocks == c).sum(1) for c in range(CLASSES)], 1)  # (tokens, CLASSES)
    counts[:, BACKGROUND] = 0
    best = counts.argmax(1)
    return np.where(counts.max(1) >= MIN_INK * side * side, best, BACKGROUND).astype(np.int64)
