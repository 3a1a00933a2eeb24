"""Training samples are what `glmv ask` would feed the model, plus the target; batches are sound."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from glmv_cli.demo import data, spec
from glmv_cli.demo.tasks import SHAPE_QUESTIONS
from glmv_cli.model.patch_codes import patch_rows


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-spec")
    spec.write_spec(out)
    return out


@pytest.fixture(scope="module")
def prep(folder):
    return data.Preparer(folder)


def test_the_tokenizer_keeps_digits_apart_and_knows_the_glm_tokens(prep):
    tok = prep.session.tokenizer
    ids = tok.encode("<think>page 12 has a red circle</think><answer>12</answer><|user|>")
    pieces = [tok.decode([i]) for i in ids]
    assert pieces[0] == "<think>" and pieces[-1] == "<|user|>" and "1" in pieces and "12" not in pieces
    assert tok.decode(ids) == "<think>page 12 has a red circle</think><answer>12</answer><|user|>"


@pytest.mark.parametrize("index", range(6))
def test_a_sample_is_the_cli_prompt_then_the_target(prep, tmp_path, index):
    example = data.draw_example("train", 0, index, tmp_path)
    sample = prep.sample(example)
    inputs = prep.session.conversation().prompt(example.question, [str(example.attachment)])
    prompt = inputs.input_ids[0].numpy()
    assert np.array_equal(sample.ids[:sample.prompt_len], prompt)
    tail = prep.session.tokenizer.decode(sample.ids[sample.prompt_len:].tolist())
    assert tail == example.target + "<|user|>"
    batch = data.collate([sample], pad_id=0, spec=prep.session.image_spec)
    for key in ("pixel_values", "pixel_values_videos"):  # uint8 storage gives the loaders' rows back
        expected = getattr(inputs, key)
        if expected is None:
            assert key not in batch.inputs
        else:
            torch.testing.assert_close(batch.inputs[key], patch_rows(expected), rtol=0, atol=1e-6)


def test_pdf_pages_are_numbered_in_the_prompt(prep, tmp_path):
    from glmv_cli.demo.tasks import make_example

    example = make_example("pdf", random.Random(3), tmp_path, 0)
    sample = prep.sample(example)
    text = prep.session.tokenizer.decode(sample.ids[:sample.prompt_len].tolist())
    pages = int(example.thinking.count("has"))
    assert [f"Page {n}:" in text for n in range(1, pages + 1)] == [True] * pages


def test_labels_cover_only_the_target_shifted_by_one(prep, tmp_path):
    samples = [prep.sample(data.draw_example("train", 0, i, tmp_path)) for i in range(3)]
    batch = data.collate(samples, pad_id=7, spec=prep.session.image_spec)
    ids, labels, mask = batch.inputs["input_ids"], batch.labels, batch.inputs["attention_mask"]
    for b, s in enumerate(samples):
        n = len(s)
        assert mask[b].sum() == n and (ids[b, n:] == 7).all()
        predicted = labels[b] != -100
        assert predicted.nonzero().flatten().tolist() == list(range(s.prompt_len - 1, n - 1))
        assert labels[b, s.prompt_len - 1:n - 1].tolist() == s.ids[s.prompt_len:].tolist()


def test_a_batch_moves_every_tensor_for_training_on_a_device(prep, tmp_path):
    """train --device: every model input and the labels go to the device (meta here), values kept."""
    samples = [prep.sample(data.draw_example("train", 0, i, tmp_path, task="video")) for i in range(2)]
    batch = data.collate(samples, pad_id=7, spec=prep.session.image_spec)
    moved = batch.to(torch.device("meta"))
    assert set(moved.inputs) == set(batch.inputs) and moved.tasks == batch.tasks
    assert all(t.device.type == "meta" for t in [*moved.inputs.values(), moved.labels])
    same = batch.to(torch.device("cpu"))
    assert all(torch.equal(same.inputs[k], v) for k, v in batch.inputs.items())


def test_batches_stay_under_the_token_budget_and_use_every_sample(prep, tmp_path):
    samples = [prep.sample(data.draw_example("train", 1, i, tmp_path)) for i in range(12)]
    plan = data.batches(samples, max_tokens=600, rng=random.Random(0))
    assert sorted(i for b in plan for i in b) == list(range(12))
    for b in plan:
        assert len(b) == 1 or max(len(samples[i]) for i in b) * len(b) <= 600


def test_splits_and_seeds_give_different_examples(tmp_path):
    a = data.draw_example("train", 0, 5, tmp_path)
    assert data.draw_example("train", 0, 5, tmp_path).target == a.target  # reproducible
    others = {data.draw_example("eval", 0, 5, tmp_path).target, data.draw_example("train", 1, 5, tmp_path).target}
    assert a.target not in others or len(others) == 1 and a.task == "numbers"


def test_every_shape_question_can_be_asked(tmp_path):
    from glmv_cli.demo.tasks import make_example

    for task in SHAPE_QUESTIONS:
        assert {make_example(task, random.Random(s), tmp_path, 0).task for s in range(3)} == {task}


@pytest.mark.parametrize("index", range(6))
def test_the_monitor_expects_the_examples_answer(prep, tmp_path, index):
    """The held-out monitor compares generated answers with this; generation never returns the end
    token, so it must not be part of the expected answer (it was: every answer counted wrong)."""
    from glmv_cli.demo import monitor

    example = data.draw_example("monitor", 0, index, tmp_path)
    sample = prep.sample(example)
    assert monitor.expected_answer(sample, prep.session.tokenizer, prep.end_id) == example.answer


def test_front_loaded_puts_every_extra_item_early():
    plan, extra = list(range(1000)), [f"x{i}" for i in range(200)]
    out = data.front_loaded(plan, extra, span=400, rng=random.Random(0))
    assert sorted(map(str, out)) == sorted(map(str, plan + extra))
    assert [x for x in out if isinstance(x, int)] == plan  # the plan keeps its order
    where, before = [], 0  # each extra item's place in the plan: how many plan items come before it
    for x in out:
        if isinstance(x, int):
            before += 1
        else:
            where.append(before)
    assert max(where) <= 400
    first, second = sum(w < 200 for w in where), sum(w >= 200 for w in where)
    assert first > 2 * second  # the share falls (3:1 expected)


def test_staged_plan_starts_with_easy_batches_alone_then_mixes_them_in():
    plan = list(range(100))
    shuffles = iter([["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]])
    out = data.staged(plan, lambda: next(shuffles), first=3, span=20, rng=random.Random(0))
    assert out[:3] == ["a", "b", "c"]  # cycled through a second shuffle to fill the first steps
    assert [x for x in out[3:] if isinstance(x, int)] == plan
    rest = [(i, x) for i, x in enumerate(out[3:]) if isinstance(x, str)]
    assert [x for _, x in rest] == ["e", "f"] and all(i <= 22 for i, _ in rest)  # a fresh shuffle, early on


def test_warm_up_examples_come_as_files_of_every_kind(tmp_path):
    from glmv_cli.demo import tasks

    drawn = [data.draw_example("train", 0, index, tmp_path, task="warm_up") for index in range(24)]
    assert {e.task for e in drawn} == set(tasks.WARM_UPS)
    assert all(e.attachment.suffix == ".png" and e.attachment.is_file() for e in drawn)
    assert [e.answer for e in drawn] == [data.draw_example("train", 0, i, tmp_path, task="warm_up").answer
                                         for i in range(24)]  # seeded


def test_concluding_samples_carry_the_concluding_thinking(tmp_path):
    spec.write_spec(tmp_path, thinking="concluding")
    tok = data.Preparer(tmp_path).session.tokenizer
    samples = list(data.build_samples(tmp_path, "train", 0, 16, workers=1, thinking="concluding"))
    with_digits = [(i, s) for i, s in enumerate(samples) if s.task in ("numbers", "pdf")]
    assert with_digits
    for i, s in with_digits:
        expected = data.draw_example("train", 0, i, tmp_path, thinking="concluding")
        tail = tok.decode(s.ids[s.prompt_len:].tolist())
        assert tail == expected.target + "<|user|>" and ". So the " in tail  # tokenised back exactly
