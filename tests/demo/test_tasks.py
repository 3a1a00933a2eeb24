"""The synthetic demo tasks obey their rules, and their answers are true of the pixels."""

from __future__ import annotations

import random

import numpy as np
import pytest

from glmv_cli.demo.tasks import COLORS, WARM_UPS, Shape, inventory, make_example, place_shapes, shapes_image


def near(pixel, color, tol=40) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel, color, strict=True))


def center(shape: Shape) -> tuple[int, int]:
    x0, y0, x1, y1 = shape.box
    return (x0 + x1) // 2, (y0 + 2 * y1) // 3  # below the middle: inside triangles too


@pytest.mark.parametrize("seed", range(20))
def test_shape_images_follow_the_rules(seed):
    image, shapes = shapes_image(random.Random(seed))
    w, h = image.size
    assert 112 <= w <= 448 and 112 <= h <= 448 and 0.5 <= w / h <= 2
    assert 1 <= len(shapes) <= 6
    pixels = np.asarray(image)
    for i, s in enumerate(shapes):
        side = s.box[2] - s.box[0]
        assert 0.10 * min(w, h) - 1 <= side <= 0.30 * min(w, h)
        x, y = center(s)
        assert near(pixels[y, x], COLORS[s.color])  # drawn where it says, in its colour
        for other in shapes[i + 1:]:
            a, b = s.box, other.box
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_placement_gives_up_when_shapes_cannot_fit():
    assert place_shapes(random.Random(0), 20, 20, [("square", "red")] * 50) is None


@pytest.mark.parametrize("seed", range(12))
def test_shape_questions_are_answerable(seed, tmp_path):
    example = make_example("shapes", random.Random(seed), tmp_path, 0)
    assert example.target.startswith("<think>From top to bottom: ") and example.target.endswith("</answer>")
    listed = example.thinking.count(" circle") + example.thinking.count(" square") + example.thinking.count(" triangle")
    if example.task == "shapes_count":
        assert example.answer in {"1", "2", "3", "4", "5", "6"}
        assert listed == int(example.answer)  # the thinking names every shape
    elif example.task == "shapes_color":
        assert example.answer in COLORS and example.thinking.endswith(f". The circle is {example.answer}.")
        assert example.thinking.count("circle") == 2 and f"{example.answer} circle" in example.thinking
    else:
        assert example.answer in {"circle", "square", "triangle"}
        assert example.thinking.endswith(f". The red one is a {example.answer}.")
        assert example.thinking.count("red ") == 2 and f"red {example.answer}" in example.thinking


def test_inventory_lists_shapes_top_to_bottom():
    shapes = [Shape("square", "blue", (0, 50, 10, 60)), Shape("circle", "orange", (40, 0, 60, 20)),
              Shape("triangle", "red", (0, 80, 30, 110))]
    assert inventory(shapes) == "From top to bottom: an orange circle, a blue square and a red triangle"
    assert inventory(shapes[:1]) == "From top to bottom: a blue square"


def test_same_seed_same_examples(tmp_path):
    a = [make_example("shapes", random.Random(7), tmp_path, 0).target for _ in range(3)]
    b = [make_example("shapes", random.Random(7), tmp_path, 0).target for _ in range(3)]
    assert a == b


@pytest.mark.parametrize("seed", range(6))
def test_numbers_show_dark_digits_inside_the_image(seed, tmp_path):
    example = make_example("numbers", random.Random(seed), tmp_path, 0)
    assert example.answer.isdigit() and 1 <= len(example.answer) <= 2
    dark = (np.asarray(example.attachment).max(axis=2) < 100).sum()
    assert dark > 50
    assert " and ".join(example.answer) in example.thinking or example.answer in example.thinking


@pytest.mark.parametrize("seed", range(4))
def test_pdf_has_the_blue_square_on_the_answer_page(seed, tmp_path):
    import pymupdf

    example = make_example("pdf", random.Random(seed), tmp_path, seed)
    doc = pymupdf.open(example.attachment)
    assert 2 <= doc.page_count <= 8
    page = int(example.answer)
    blue = []
    for p in doc:
        pixels = np.frombuffer(p.get_pixmap(dpi=180).samples, np.uint8).reshape(-1, 3)  # as glmv renders
        blue.append(int((np.abs(pixels.astype(int) - COLORS["blue"]).max(axis=1) < 40).sum()))
    assert blue[page - 1] > 100
    assert f"page {page} has a blue square" in example.thinking.lower()


@pytest.mark.parametrize("seed", range(3))
def test_video_shape_appears_at_the_answer_second(seed, tmp_path):
    import av

    example = make_example("video", random.Random(seed), tmp_path, seed)
    second = int(example.answer)
    with av.open(str(example.attachment)) as container:
        stream = container.streams.video[0]
        frames = [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    duration = frames[-1][0]
    assert 4 - 1 <= duration <= 12
    for t, pixels in frames:
        colored = (pixels.min(axis=2) < 150).sum()
        if t < second - 0.05:
            assert colored == 0, f"shape visible at {t:.2f}s, before {second}s"
        elif t > second + 0.05:
            assert colored > 20, f"shape missing at {t:.2f}s"


@pytest.mark.parametrize("seed", range(8))
def test_warm_ups_are_the_real_questions_on_large_things(seed, tmp_path):
    rng = random.Random(seed)
    shapes = make_example("big_shapes", rng, tmp_path, 0)
    assert shapes.task == "big_shapes" and shapes.target.startswith("<think>From top to bottom: ")
    assert shapes.question in {"How many shapes are in the image?", "What color is the circle?",
                               "What shape is the red one?"}
    listed = sum(shapes.thinking.count(k) for k in (" circle", " square", " triangle"))
    if shapes.answer.isdigit():
        assert listed == int(shapes.answer) <= 3
    else:
        assert shapes.answer in shapes.thinking and listed <= 4  # the colour question names the circle twice
    digit = make_example("big_digit", rng, tmp_path, 0)
    assert digit.task == "big_digit" and digit.question == "What number is written in the image?"
    assert len(digit.answer) == 1 and digit.thinking == f"The image shows the digit {digit.answer}."
    pixels = np.asarray(digit.attachment).max(axis=2) < 100  # the glyph's rows span over half the height
    rows = np.flatnonzero(pixels.any(axis=1))
    assert rows[-1] - rows[0] > 0.35 * min(pixels.shape)
    one = make_example("single_shape", rng, tmp_path, 0)
    assert one.task == "single_shape" and one.answer in (*COLORS, "circle", "square", "triangle")
    assert one.answer in one.thinking


def test_warm_up_draws_every_kind(tmp_path):
    rng = random.Random(0)
    assert {make_example("warm_up", rng, tmp_path, i).task for i in range(40)} == set(WARM_UPS)


def test_dark_shapes_are_black_and_their_kind_is_asked(tmp_path):
    for seed in range(6):
        example = make_example("dark_shape", random.Random(seed), tmp_path, 0)
        assert example.question == "What shape is in the image?" and example.answer in ("circle", "square", "triangle")
        assert example.thinking == f"The image shows one shape, a {example.answer}."
        assert {color for _, color in example.attachment.getcolors(4)} == {(0, 0, 0), (255, 255, 255)}


@pytest.mark.parametrize("seed", range(6))
def test_big_shapes_are_large(seed):
    image, shapes = shapes_image(random.Random(seed), sizes=(0.25, 0.45), counts=(1, 3))
    assert 1 <= len(shapes) <= 3
    assert all(0.25 * min(image.size) - 1 <= s.box[2] - s.box[0] <= 0.45 * min(image.size) for s in shapes)


@pytest.mark.parametrize("task", ["numbers", "pdf", "shapes", "video", "warm_up"])
def test_the_concluding_thinking_ends_with_the_answer_and_changes_nothing_else(task, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for seed in range(6):
        listing = make_example(task, random.Random(seed), tmp_path / "a", 0, "listing")
        concluding = make_example(task, random.Random(seed), tmp_path / "b", 0, "concluding")
        assert (concluding.task, concluding.question, concluding.answer) == (listing.task, listing.question,
                                                                             listing.answer)
        if task in ("numbers", "pdf"):
            assert concluding.thinking.endswith(f" is {concluding.answer}.") or \
                concluding.thinking.endswith(f" is on page {concluding.answer}.")
            if task == "pdf":  # the pages up to the blue square, then the conclusion
                described = concluding.thinking.split(". So ")[0]
                assert described.lower().endswith(f"page {listing.answer} has a blue square")
                assert listing.thinking.startswith(described)  # the same pages, drawn alike


def test_numbers_concluding_thinking_names_left_and_right(tmp_path):
    examples = [make_example("numbers", random.Random(seed), tmp_path, 0, "concluding") for seed in range(30)]
    two = [e for e in examples if len(e.answer) == 2]
    assert two and len(two) < len(examples)
    for e in two:
        left, right = (("an " if d == "8" else "a ") + d for d in e.answer)
        assert e.thinking == (f"The image shows two digits: on the left {left}, on the right {right}. "
                              f"So the number is {e.answer}.")
    assert all(e.thinking.startswith("The image shows one digit, a") for e in examples if len(e.answer) == 1)
