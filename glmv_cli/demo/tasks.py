"""Synthetic tasks with checkable answers, for training and evaluating the demo checkpoint.

Four tasks, every example drawn from a seeded `random.Random`:
  * shapes  - 1-6 solid, non-overlapping circles / squares / triangles in six colours on white,
              each 10-30% of the shorter side, images 112-448 px, aspect 1:2 .. 2:1. Questions: how
              many shapes; the colour of the circle (exactly one circle); the shape of the red one
              (exactly one red shape).
  * numbers - one or two digits, black on white, DejaVu Sans, varied size and position.
  * pdf     - 2-8 pages, one shape per page; which page holds the blue square.
  * video   - 4-12 s at 8-30 fps, white frames; one shape appears at a whole second and stays.
Answers come in the model's own format: `<think>` a short true description `</think>` then
`<answer>` the answer `</answer>`. The thinking has two styles (THINKING): "listing" (the shipped
checkpoint's first recipe) and "concluding", where every thinking ends by stating the answer in
words, so that the answer copies the thinking's last clause instead of searching it again: a PDF's
pages are listed up to the blue square ("... page 3 has a blue square. So the blue square is on
page 3."), a number's digits left and right ("The image shows two digits: on the left a 3, on the
right a 7. So the number is 37."). The questions and answers are the same in both. PDFs and
videos are written as real files (PyMuPDF, PyAV), so they go through the same loaders as a user's
files.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from glmv_cli.demo import ink

COLORS = {"red": (220, 30, 30), "green": (30, 160, 40), "blue": (30, 60, 220), "yellow": (240, 200, 20),
          "purple": (140, 40, 170), "orange": (245, 130, 20)}
SHAPES = ("circle", "square", "triangle")
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
SIZES = (0.10, 0.30)  # a shape's side, as a fraction of the image's shorter side
COUNTS = (1, 6)  # shapes per image
THINKING = ("listing", "concluding")
SHAPE_NAMES = tuple((kind, color) for kind in SHAPES for color in COLORS)  # ink.centre_class's order


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"

    @property
    def a_name(self) -> str:
        return ("an " if self.color[0] in "aeiou" else "a ") + self.name


@dataclass(frozen=True)
class Example:
    task: str  # shapes_count | shapes_color | shapes_shape | numbers | pdf | video
    question: str
    thinking: str
    answer: str
    attachment: Image.Image | Path
    ink: ink.Ink | None = None  # where a number's digits or the shapes lie (ink.py), for training only

    @property
    def target(self) -> str:
        """The assistant text the model should produce."""
        return f"<think>{self.thinking}</think><answer>{self.answer}</answer>"


def draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, fill: tuple[int, int, int] | int | None = None) -> None:
    """`shape` in its colour (or in `fill`: a colour, or a level on a one-band image)."""
    x0, y0, x1, y1 = shape.box
    fill = fill or COLORS[shape.color]
    if shape.kind == "circle":
        draw.ellipse(shape.box, fill=fill)
    elif shape.kind == "square":
        draw.rectangle(shape.box, fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)


def shapes_ink(shapes: list[Shape], size: tuple[int, int]) -> ink.Ink:
    """The shapes' pixels as ink.BODY on an image of `size` (width, height), and each one's box
    centre (inside every kind) named with its kind and colour."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for shape in shapes:
        draw_shape(draw, shape, fill=ink.BODY)
    centres = tuple(((s.box[0] + s.box[2]) / 2, (s.box[1] + s.box[3]) / 2,
                     ink.centre_class(SHAPE_NAMES.index((s.kind, s.color)))) for s in shapes)
    return ink.Ink(np.asarray(mask), centres)


def place_shapes(rng: random.Random, width: int, height: int, specs: list[tuple[str, str]],
                 sizes: tuple[float, float] = SIZES) -> list[Shape] | None:
    """Non-overlapping boxes (with a margin) for (kind, colour) specs, each side a `sizes` fraction
    of the shorter side, or None if they do not fit."""
    short = min(width, height)
    placed: list[Shape] = []
    for kind, color in specs:
        for _ in range(200):
            side = rng.randint(int(sizes[0] * short), int(sizes[1] * short))
            x0, y0 = rng.randint(0, width - side), rng.randint(0, height - side)
            box = (x0, y0, x0 + side, y0 + side)
            if all(_apart(box, other.box, margin=4) for other in placed):
                placed.append(Shape(kind, color, box))
                break
        else:
            return None
    return placed


def _apart(a, b, margin: int) -> bool:
    return a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1]


def random_size(rng: random.Random, low: int = 112, high: int = 448) -> tuple[int, int]:
    """(width, height) between low and high pixels with an aspect ratio between 1:2 and 2:1."""
    while True:
        w, h = rng.randint(low, high), rng.randint(low, high)
        if 0.5 <= w / h <= 2.0:
            return w, h


def shapes_image(rng: random.Random, sizes: tuple[float, float] = SIZES,
                 counts: tuple[int, int] = COUNTS) -> tuple[Image.Image, list[Shape]]:
    while True:
        width, height = random_size(rng)
        specs = [(rng.choice(SHAPES), rng.choice(list(COLORS))) for _ in range(rng.randint(*counts))]
        shapes = place_shapes(rng, width, height, specs, sizes)
        if shapes:
            break
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        draw_shape(draw, shape)
    return image, shapes


def shape_count(n: int) -> str:
    return f"{NUMBER_WORDS[n]} shape{'s' if n > 1 else ''}"


SHAPE_QUESTIONS = ("shapes_count", "shapes_color", "shapes_shape")


def inventory(shapes: list[Shape]) -> str:
    """'From top to bottom: a red circle, a blue square and a green triangle' (by centre height)."""
    names = [s.a_name for s in sorted(shapes, key=lambda s: (s.box[1] + s.box[3], s.box[0] + s.box[2]))]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"From top to bottom: {listed}"


def shapes_example(rng: random.Random, task: str | None = None, sizes: tuple[float, float] = SIZES,
                   counts: tuple[int, int] = COUNTS) -> Example:
    """A shapes question (`task`, or one of the three at random) on an image that allows it: the
    colour question needs exactly one circle, the shape question exactly one red shape. The
    thinking names every shape, top to bottom, then states what the answer follows from: each
    shape's colour and kind is supervised in every example (not one word per picture), and the
    question becomes a look-up in that text, which a small decoder learns easily."""
    task = task or rng.choice(SHAPE_QUESTIONS)
    while True:
        image, shapes = shapes_image(rng, sizes, counts)
        n = len(shapes)
        circles = [s for s in shapes if s.kind == "circle"]
        reds = [s for s in shapes if s.color == "red"]
        seen, asked = inventory(shapes), None
        if task == "shapes_count":
            asked = "How many shapes are in the image?", f"{seen}: {shape_count(n)}.", str(n)
        elif task == "shapes_color" and len(circles) == 1:
            asked = "What color is the circle?", f"{seen}. The circle is {circles[0].color}.", circles[0].color
        elif task == "shapes_shape" and len(reds) == 1:
            asked = "What shape is the red one?", f"{seen}. The red one is a {reds[0].kind}.", reds[0].kind
        if asked:
            return Example(task, *asked, image, shapes_ink(shapes, image.size))


def single_shape_example(rng: random.Random, dark: bool = False) -> Example:
    """Training only, a warm-up: one large shape (40-80% of the shorter side), its colour or its kind
    asked; or (`dark`) a black one, its kind asked."""
    width, height = random_size(rng)
    short = min(width, height)
    side = rng.randint(int(0.4 * short), int(0.8 * short))
    x0, y0 = rng.randint(0, width - side), rng.randint(0, height - side)
    shape = Shape(rng.choice(SHAPES), rng.choice(list(COLORS)), (x0, y0, x0 + side, y0 + side))
    image = Image.new("RGB", (width, height), "white")
    draw_shape(ImageDraw.Draw(image), shape, fill=(0, 0, 0) if dark else None)
    if dark:
        return Example("dark_shape", "What shape is in the image?", f"The image shows one shape, a {shape.kind}.",
                       shape.kind, image)
    thinking, where = f"The image shows one shape, {shape.a_name}.", shapes_ink([shape], image.size)
    if rng.random() < 0.5:
        return Example("single_shape", "What color is the shape?", thinking, shape.color, image, where)
    return Example("single_shape", "What shape is in the image?", thinking, shape.kind, image, where)


WARM_UPS = ("dark_shape", "single_shape", "big_shapes", "big_digit")


def warm_up_example(rng: random.Random, task: str | None = None, thinking: str = "listing") -> Example:
    """Training only: an easy example, where what matters in the picture is large, so that the
    vision tower learns colour and form before the decoder can lean on the text alone. `task` (one
    of WARM_UPS, or one at random): "dark_shape" (one black shape of 40-80% of the shorter side, its
    kind asked), "single_shape" (the same in colour, its colour or kind asked), "big_shapes" (1-3
    shapes of 25-45%, the real shapes questions) or "big_digit" (one digit of 60-90%, the real
    numbers question).

    Measured on 1500-example single-task runs: a big coloured shape's kind stayed at chance (33%)
    after 200 steps, while a black one's was read right 90% of the time after 100 (colour
    dominates the patch embeddings, and edges of six colours on white look alike only later);
    with half the shapes black, the coloured ones' kind was right 67% of the time at step 200.
    Likewise one big digit per image was read right 95% of the time after 300 steps, where the
    real numbers (1-2 digits, 20-60%) stayed at chance."""
    task = task or rng.choice(WARM_UPS)
    if task in ("dark_shape", "single_shape"):
        return single_shape_example(rng, dark=task == "dark_shape")
    if task == "big_shapes":
        return replace(shapes_example(rng, sizes=(0.25, 0.45), counts=(1, 3)), task=task)
    if task == "big_digit":
        return replace(numbers_example(rng, sizes=(0.6, 0.9), two_digits=0.0, thinking=thinking), task=task)
    raise ValueError(task)


def numbers_example(rng: random.Random, sizes: tuple[float, float] = (0.2, 0.6), two_digits: float = 0.6,
                    thinking: str = "listing") -> Example:
    """One or two digits (two with probability `two_digits`), the font size a `sizes` fraction of
    the shorter side; the thinking in the `thinking` style (numbers_thinking)."""
    value = rng.randint(0, 99) if rng.random() < two_digits else rng.randint(0, 9)
    text = str(value)
    width, height = random_size(rng)
    size = rng.randint(int(sizes[0] * min(width, height)), int(sizes[1] * min(width, height)))
    if not FONT.is_file():
        raise FileNotFoundError(f"{FONT} is missing: install Debian's fonts-dejavu-core (the number images' font)")
    font = ImageFont.truetype(str(FONT), size)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = rng.randint(-left, max(-left, width - right))
    y = rng.randint(-top, max(-top, height - bottom))
    draw.text((x, y), text, fill="black", font=font)
    return Example("numbers", "What number is written in the image?", numbers_thinking(text, thinking), text, image,
                   ink.Ink(ink.digit_map(text, font, (x, y), image.size)))


def numbers_thinking(text: str, style: str = "listing") -> str:
    """listing: 'The image shows the digits 3 and 7.'; concluding: 'The image shows two digits: on
    the left a 3, on the right a 7. So the number is 37.' (one digit: '... one digit, a 7. So ...')."""
    if style == "listing":
        digits = " and ".join(text) if len(text) == 2 else text
        return f"The image shows the digit{'s' if len(text) == 2 else ''} {digits}."
    a = [("an " if d == "8" else "a ") + d for d in text]
    seen = f"two digits: on the left {a[0]}, on the right {a[1]}" if len(text) == 2 else f"one digit, {a[0]}"
    return f"The image shows {seen}. So the number is {text}."


def pdf_example(rng: random.Random, folder: Path, index: int, thinking: str = "listing") -> Example:
    """A PDF whose pages each hold one shape; exactly one page holds the blue square."""
    import pymupdf

    pages = rng.randint(2, 8)
    target = rng.randrange(pages)
    doc = pymupdf.open()
    names = []
    for page_no in range(pages):
        width, height = rng.choice([(60, 80), (80, 60), (70, 70)])  # small cards: few tokens per page
        page = doc.new_page(width=width, height=height)
        if page_no == target:
            kind, color = "square", "blue"
        else:
            kind, color = rng.choice([(k, c) for k in SHAPES for c in COLORS if (k, c) != ("square", "blue")])
        shape = place_shapes(rng, width, height, [(kind, color)])[0]
        _draw_pdf_shape(page, shape)
        names.append(shape.a_name)
    path = folder / f"pdf-{index:05d}.pdf"
    doc.save(str(path))
    doc.close()
    return Example("pdf", "On which page is the blue square?", pdf_thinking(names, thinking), str(target + 1), path)


def pdf_thinking(a_names: list[str], style: str = "listing") -> str:
    """listing: every page, 'Page 1 has a red circle; page 2 has a blue square; page 3 has ...';
    concluding: the pages up to the blue square, then the answer in words, 'Page 1 has a red
    circle; page 2 has a blue square. So the blue square is on page 2.'"""
    if style == "listing":
        return "; ".join(f"page {i} has {name}" for i, name in enumerate(a_names, start=1)).capitalize() + "."
    page = a_names.index("a blue square") + 1
    return pdf_thinking(a_names[:page]) + f" So the blue square is on page {page}."


def _draw_pdf_shape(page, shape: Shape) -> None:
    import pymupdf

    x0, y0, x1, y1 = shape.box
    color = tuple(c / 255 for c in COLORS[shape.color])
    if shape.kind == "circle":
        page.draw_circle(((x0 + x1) / 2, (y0 + y1) / 2), (x1 - x0) / 2, color=color, fill=color)
    elif shape.kind == "square":
        page.draw_rect(pymupdf.Rect(x0, y0, x1, y1), color=color, fill=color)
    else:
        page.draw_polyline([((x0 + x1) / 2, y0), (x1, y1), (x0, y1), ((x0 + x1) / 2, y0)], color=color,
                           fill=color, closePath=True)


def video_example(rng: random.Random, folder: Path, index: int) -> Example:
    """An mp4 of white frames where one shape appears at a whole second and stays."""
    import av
    import numpy as np

    seconds, fps = rng.randint(4, 12), rng.randint(8, 30)
    appear = rng.randint(1, seconds - 1)
    width, height = rng.choice([(160, 120), (192, 144), (224, 168), (128, 160)])
    kind, color = rng.choice(SHAPES), rng.choice(list(COLORS))
    shape = place_shapes(rng, width, height, [(kind, color)])[0]
    frame_with = Image.new("RGB", (width, height), "white")
    draw_shape(ImageDraw.Draw(frame_with), shape)
    blank, full = np.full((height, width, 3), 255, np.uint8), np.asarray(frame_with)
    path = folder / f"video-{index:05d}.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for i in range(seconds * fps):
            pixels = full if i >= appear * fps else blank
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Example("video", video_question(kind, color), video_thinking(kind, color, appear), str(appear), path)


def video_question(kind: str, color: str) -> str:
    return f"At which second does the {color} {kind} appear?"


def video_thinking(kind: str, color: str, appear: int) -> str:
    a_name = Shape(kind, color, (0, 0, 0, 0)).a_name
    return f"The first frames are blank; {a_name} appears at {appear} seconds and stays."


TASKS = ("shapes", "numbers", "pdf", "video")


def as_file(example: Example, folder: Path, index: int) -> Example:
    """The example with its image written to `folder` as a PNG (PDFs and videos are files already):
    attachments are then files, as a user's are."""
    if isinstance(example.attachment, Path):
        return example
    path = folder / f"{example.task}-{index:05d}.png"
    example.attachment.save(path)
    return replace(example, attachment=path)


def make_example(task: str, rng: random.Random, folder: Path, index: int, thinking: str = "listing") -> Example:
    """An example of `task`: one of TASKS, one shapes question of SHAPE_QUESTIONS, one of the
    training warm-ups WARM_UPS, or "warm_up" (one of those at random); the thinking in a THINKING
    style (the pixels, question and answer do not depend on it)."""
    if task == "shapes":
        return shapes_example(rng)
    if task in SHAPE_QUESTIONS:
        return shapes_example(rng, task)
    if task == "numbers":
        return numbers_example(rng, thinking=thinking)
    if task == "warm_up" or task in WARM_UPS:
        return warm_up_example(rng, None if task == "warm_up" else task, thinking)
    if task == "pdf":
        return pdf_example(rng, folder, index, thinking)
    if task == "video":
        return video_example(rng, folder, index)
    raise ValueError(task)
