"""A long prompt says how far it has come: the Meter (app/meter.py) with a clock of our own, then
real glmv processes whose prefill is slowed to a real model's pace on a CPU (the test hook
GLMV_TEST_PREFILL_DELAY_MS): --jsonl's progress events and the status line in a real terminal."""

from __future__ import annotations

import json
import re
import shutil
from itertools import pairwise

import pytest

from glmv_cli.app.meter import SHOW_AFTER, Meter
from tests.cli.conftest import hooked_env, run_glmv


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_watchers_hear_of_a_step_only_after_a_second_and_at_most_as_often_as_they_asked():
    clock, heard, seldom = Clock(), [], []
    meter = Meter(clock)
    meter.watch(lambda m: heard.append((clock.now, m.fraction)), every=0.25)
    meter.watch(lambda m: seldom.append(clock.now), every=10)
    for step in range(1, 41):  # 40 steps of 0.1 s, 2.5% of the work each
        clock.now += 0.1
        meter(step * 2.5, 100)
    times = [t for t, _ in heard]
    assert times[0] >= 100 + SHOW_AFTER and times[0] - 100 < SHOW_AFTER + 0.1  # (a quick step shows nothing)
    assert all(b - a >= 0.25 - 1e-9 for a, b in pairwise(times))
    assert len(heard) == pytest.approx(30 / 3, abs=1) and seldom == [times[0]]
    assert [f for _, f in heard] == sorted(f for _, f in heard) and heard[-1][1] <= 1


def test_the_time_left_is_the_pace_so_far_and_the_description_says_it():
    clock = Clock()
    meter = Meter(clock)
    clock.now += 1
    meter(1, 100)  # 1% in 1 s: too early to guess
    assert meter.seconds_left() is None and meter.describe() == "1%"
    clock.now += 29
    meter(37.5, 100)  # 37.5% in 30 s: 50 s left
    assert meter.seconds_left() == pytest.approx(50) and meter.describe() == "37%, about 50 s left"
    meter(10, 100)  # 10% in 30 s: 270 s left
    assert meter.describe() == "10%, about 5 min left"
    meter(100, 100)
    assert meter.describe() == "100%" and meter.fraction == 1
    assert Meter(clock).describe() == "0%"  # (nothing reported yet)


def test_a_slow_prompt_reports_its_share_done_and_time_left_in_jsonl(tiny, media):
    """The progress event of reading the prompt, then the same with "fraction" and "seconds_left"
    about every second as it goes; then the answer, as without the meter."""
    env = hooked_env(GLMV_TEST_PREFILL_DELAY_MS="500")  # 5 steps (2 vision blocks, the merger, 2 layers)
    run = run_glmv("ask", media["png"], "What is it?", "--model", tiny, "--max-new-tokens", "3", "--jsonl", env=env)
    assert run.code == 0, run.err
    events = [json.loads(line) for line in run.out.splitlines()]
    reading = [e for e in events if e["type"] == "progress" and e["message"].startswith("reading the prompt")]
    assert "fraction" not in reading[0]
    metered = reading[1:]
    assert metered, events
    fractions = [e["fraction"] for e in metered]
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] <= 1
    assert all(isinstance(e["seconds_left"], float) and e["seconds_left"] >= 0 for e in metered)
    assert events[-1]["type"] == "done" and events[-1]["usage"]["completion_tokens"] == 3
    plain = run_glmv("ask", media["png"], "What is it?", "--model", tiny, "--max-new-tokens", "3", "--json")
    assert plain.json["completion_ids"] == events[-1]["completion_ids"]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")
def test_the_status_line_shows_the_share_done_and_the_time_left_then_gives_way_to_the_answer(tiny, media, tmp_path):
    from tests.cli.tmux import Tmux

    (tmp_path / "model").symlink_to(tiny)
    (tmp_path / "a.png").symlink_to(media["png"])
    env = hooked_env(GLMV_TEST_PREFILL_DELAY_MS="700")
    term = Tmux(tmp_path, PYTHONPATH=env["PYTHONPATH"], GLMV_TEST_PREFILL_DELAY_MS="700")
    try:
        term.type("glmv ask a.png 'What is it?' --model model --max-new-tokens 3")
        screen = term.wait_for("%, about", timeout=60)
        assert re.search(r"reading the prompt \(\d+ tokens\): \d+%, about \d+ s left", screen), screen
        screen = term.wait_for_shell()
        assert "reading the prompt" not in screen and "%" not in screen  # (the status line is gone)
    finally:
        term.close()
