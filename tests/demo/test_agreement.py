"""The answer a thinking implies is read from its description, in both thinking styles."""

from __future__ import annotations

import random

import pytest

from glmv_cli.demo.agreement import implied_answer
from glmv_cli.demo.evaluate import TASKS, Outcome, agreement, by_digits, table
from glmv_cli.demo.tasks import THINKING, make_example


@pytest.mark.parametrize("style", THINKING)
@pytest.mark.parametrize("task", TASKS)
def test_a_true_thinking_implies_the_true_answer(task, style, tmp_path):
    for seed in range(8):
        example = make_example(task, random.Random(f"{task}-{seed}"), tmp_path, seed, style)
        assert implied_answer(task, example.thinking) == example.answer, example.thinking


def test_the_conclusion_is_not_what_is_read():
    # the case: the list says page 5, a conclusion (or answer) saying 3 does not change that
    thinking = ("Page 1 has a red circle; page 2 has a green square; page 5 has a blue square. "
                "So the blue square is on page 3.")
    assert implied_answer("pdf", thinking) == "5"
    number = "The image shows two digits: on the left a 3, on the right a 7. So the number is 77."
    assert implied_answer("numbers", number) == "37"


def test_a_thinking_that_implies_no_single_answer_agrees_with_none():
    two_circles = "From top to bottom: a red circle and a blue circle. The circle is red."
    assert implied_answer("shapes_color", two_circles) is None
    assert implied_answer("pdf", "Page 1 has a red circle; page 2 has a green") is None
    assert implied_answer("numbers", "The image shows") is None
    assert implied_answer("shapes_count", "From top to bottom: a red circle, a blue square: two shapes.") == "2"


def test_agreement_per_task_and_overall():
    def outcome(task, thinking, answer):
        return Outcome(task, "f", "q", answer, answer, True, thinking)

    outcomes = [outcome("video", "The first frames are blank; a red circle appears at 3 seconds and stays.", "3"),
                outcome("video", "The first frames are blank; a red circle appears at 3 seconds and stays.", "4"),
                outcome("numbers", "The image shows the digits 1 and 4.", "14"), outcome("numbers", "", "")]
    assert agreement(outcomes) == {"video": 0.5, "numbers": 0.5, "all": 0.5}


def test_the_table_splits_numbers_by_their_digits():
    def number(expected, answer):
        return Outcome("numbers", "f", "q", expected, answer, expected == answer, "")

    outcomes = [number("7", "7"), number("4", "44"), number("37", "37"), number("37", "77"), number("90", "99"),
                Outcome("video", "f", "q", "3", "3", True, "")]
    assert by_digits(outcomes) == {"one digit": (1, 2), "two digits": (1, 3)}
    rows = table(outcomes).splitlines()
    at = next(i for i, row in enumerate(rows) if row.startswith("numbers"))
    assert rows[at + 1].split() == ["one", "digit", "2", "1", "50.0%"]
    assert rows[at + 2].split() == ["two", "digits", "3", "1", "33.3%"]
    assert by_digits(outcomes[-1:]) == {}  # no numbers asked, no split
