"""Ink labels name, for every merged token the model sees, the digit (and its side) drawn there, or
the shape whose centre or body it holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glmv_cli.demo import data, ink, spec, tasks, train
from glmv_cli.inputs.patches import load_patch_specs
from glmv_cli.model.config import Glm4vConfig
from glmv_cli.model.glm4v import Glm4v


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-spec")
    spec.write_spec(out)
    return out


def numbers(folder, tmp_path, count: int, digits: int) -> list[data.Sample]:
    prep, out = data.Preparer(folder), []
    for index in range(200):
        example = data.draw_example("ink", 0, index, tmp_path, task="numbers")
        if len(example.answer) == digits:
            out.append(prep.sample(example))
        if len(out) == count:
            return out
    raise AssertionError("too few numbers of that many digits")


def test_the_digit_map_is_the_numbers_own_ink():
    for index in range(20):
        example = tasks.numbers_example(data.example_rng("ink", 0, index))
        dark = np.asarray(example.attachment.convert("L")) < 128
        drawn = example.ink.pixels > 0
        assert (dark & drawn).sum() / (dark | drawn).sum() > 0.97  # the same pixels, anti-aliasing aside
        assert set(np.unique(example.ink.pixels[drawn])) == {ink.digit_class(example.answer, k)
                                                      for k in range(len(example.answer))}


def test_two_digits_tokens_are_named_left_and_right_where_the_model_sees_ink(folder, tmp_path):
    for sample in numbers(folder, tmp_path, 6, digits=2):
        _, h, w = sample.image_grids[0]
        labels = sample.ink_labels.reshape(h // 2, w // 2)
        left, right = labels[(labels >= 11) & (labels <= 20)], labels[labels >= 21]
        assert left.size and right.size and len(set(left)) == 1 and len(set(right)) == 1
        left_cols = np.nonzero((labels >= 11) & (labels <= 20))[1]
        right_cols = np.nonzero(labels >= 21)[1]
        assert left_cols.mean() < right_cols.mean()
        # every inked token holds dark pixels in the patches the model receives (uint8 levels)
        darkest = sample.image_codes.reshape(h // 2, w // 2, -1).min(-1)  # each merged token's 2 x 2 patches
        assert (darkest[labels > 0] < 100).all()


def test_each_shape_is_named_once_on_the_token_holding_its_centre(folder, tmp_path):
    prep, names = data.Preparer(folder), tasks.SHAPE_NAMES
    seen = 0
    for index in range(12):
        example = data.draw_example("ink", 0, index, tmp_path, task="shapes_count")
        sample = prep.sample(example)
        _, h, w = sample.image_grids[0]
        labels = sample.ink_labels.reshape(h // 2, w // 2)
        centres = labels[labels >= ink.CENTRES]
        shapes = [names[c - ink.CENTRES] for c in centres]
        inventory = example.thinking.split(": ")[1]
        assert all(f"{color} {kind}" in inventory for kind, color in shapes)
        assert len(centres) <= int(example.answer)  # two centres may share a token
        seen += len(centres) == int(example.answer)
        # a centre token holds its shape's colour in the pixels the model receives, a body token some colour
        pixels = sample.image_codes.reshape(h // 2, w // 2, 4, 3, -1).transpose(0, 1, 2, 4, 3).reshape(
            h // 2, w // 2, -1, 3).astype(int)
        for (row, col), (_, color) in zip(np.argwhere(labels >= ink.CENTRES), shapes, strict=True):
            assert (np.abs(pixels[row, col] - tasks.COLORS[color]).max(-1) < 40).any()
        for row, col in np.argwhere(labels == ink.BODY):
            assert (pixels[row, col].max(-1) - pixels[row, col].min(-1) > 80).any()
    assert seen >= 10


def test_a_batch_has_one_ink_label_per_image_token_in_the_towers_order(folder, tmp_path):
    prep = data.Preparer(folder)
    shapes = prep.sample(data.draw_example("ink", 0, 0, tmp_path, task="shapes_color"))
    pdf = prep.sample(data.draw_example("ink", 0, 0, tmp_path, task="pdf"))
    digits = numbers(folder, tmp_path, 2, digits=1)
    batch = data.collate([digits[0], pdf, shapes, digits[1]], 0, load_patch_specs(folder)[0])
    model = Glm4v(Glm4vConfig.from_dict(spec.write_spec(tmp_path / "spec")))
    with torch.no_grad():
        features = model.visual(batch.inputs["pixel_values"], batch.inputs["image_grid_thw"])
    n0, n1 = len(digits[0].ink_labels), sum(int(np.prod(g)) // 4 for g in pdf.image_grids)
    n2 = len(shapes.ink_labels)
    assert n2 == int(np.prod(shapes.image_grids[0])) // 4 and len(pdf.image_grids) > 1
    assert batch.ink_labels.shape == (features.shape[0],)
    assert torch.equal(batch.ink_labels[:n0], torch.from_numpy(digits[0].ink_labels))
    assert (batch.ink_labels[n0:n0 + n1] == -100).all()
    assert torch.equal(batch.ink_labels[n0 + n1:n0 + n1 + n2], torch.from_numpy(shapes.ink_labels))
    assert torch.equal(batch.ink_labels[n0 + n1 + n2:], torch.from_numpy(digits[1].ink_labels))
    assert data.collate([pdf], 0, load_patch_specs(folder)[0]).ink_labels is None
    # without shape labels (--shape-ink 0, as up to the fifth checkpoint) shape images count as unlabelled
    digits_only = data.collate([digits[0], pdf, shapes, digits[1]], 0, load_patch_specs(folder)[0], shapes_ink=False)
    assert (digits_only.ink_labels[n0:n0 + n1 + n2] == -100).all()
    assert torch.equal(digits_only.ink_labels[:n0], batch.ink_labels[:n0])
    assert torch.equal(digits_only.ink_labels[n0 + n1 + n2:], batch.ink_labels[n0 + n1 + n2:])
    assert data.collate([shapes], 0, load_patch_specs(folder)[0], shapes_ink=False).ink_labels is None


def test_the_ink_loss_weighs_background_digits_bodies_and_centres_alike_and_reaches_the_tower(folder, tmp_path):
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 14, -100])
    logits = torch.randn(8, ink.CLASSES)
    ce = torch.nn.functional.cross_entropy(logits[:7], labels[:7], reduction="none")
    assert float(train.ink_loss(logits, labels)) == pytest.approx(float(ce[:6].mean() + ce[6]))
    labels = torch.tensor([0, 0, 0, 3, 25, ink.BODY, ink.BODY, ink.BODY, ink.CENTRES + 7, -100])
    logits = torch.randn(10, ink.CLASSES)
    ce = torch.nn.functional.cross_entropy(logits[:9], labels[:9], reduction="none")
    expected = ce[:3].mean() + ce[3:5].mean() + ce[5:8].mean() + ce[8]
    assert float(train.ink_loss(logits, labels)) == pytest.approx(float(expected))
    expected = ce[:3].mean() + ce[3:5].mean() + 0.25 * (ce[5:8].mean() + ce[8])
    assert float(train.ink_loss(logits, labels, shape_weight=0.25)) == pytest.approx(float(expected))

    torch.manual_seed(0)
    model = Glm4v(Glm4vConfig.from_dict(spec.write_spec(tmp_path / "spec")))
    head = torch.nn.Linear(model.cfg.text.hidden_size, ink.CLASSES)
    batch = data.collate(numbers(folder, tmp_path, 2, digits=2), 0, load_patch_specs(folder)[0])
    grads = []
    for weight in (0.0, 1.0):
        model.zero_grad()
        loss, by_task = train.loss_of(model, batch, head, weight)
        loss.backward()
        grads.append(model.visual.patch_embed.proj.weight.grad.clone())
        assert ("ink" in by_task) == (weight > 0)
    assert not torch.allclose(grads[0], grads[1])  # the ink loss trains the tower
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
