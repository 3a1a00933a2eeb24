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


def test_the_hint_s_max_pixels_reads_a_photo_as_about_the_tokens_it_says():
    """--max-pixels max_pixels_for(1000): a 12-megapixel photo (6,030 tokens by default) and a
    4K frame come out at 1,000 tokens or a little under; a small image is left as it is."""
    from glmv_cli.inputs.patches import PatchSpec, max_pixels_for, smart_resize

    spec = PatchSpec()
    limit = max_pixels_for(1000, spec)
    for h, w in ((3000, 4000), (2160, 3840), (4000, 1000)):
        rh, rw = smart_resize(2, h, w, max_pixels=limit)
        assert 900 <= rh * rw // spec.factor**2 <= 1000, (h, w)
    assert smart_resize(2, 600, 800, max_pixels=limit) == smart_resize(2, 600, 800)


def test_a_slow_prompt_of_big_images_ends_with_a_note_on_max_pixels(tiny, media, tmp_path, monkeypatch):
    """Images most of a prompt read slower than SLOW_PROMPT_S: a note with the --max-pixels that
    makes an image ~TOKENS_AN_IMAGE tokens; a quick prompt, or one mostly text, gets none."""
    import glmv_cli.app.session as session
    from glmv_cli import Session
    from glmv_cli.app.events import GenerationOptions
    from glmv_cli.inputs.patches import max_pixels_for, smart_resize
    from tests.cli.conftest import random_image

    big = random_image(tmp_path / "big.png", 640, 480)
    glm = Session(tiny, device="cpu")
    quick = glm.run("What is it?", [big], generation=GenerationOptions(max_new_tokens=1))
    assert not any("--max-pixels" in n for n in quick.notes)  # (read in well under 30 s)
    monkeypatch.setattr(session, "SLOW_PROMPT_S", 0.0)
    monkeypatch.setattr(session, "TOKENS_AN_IMAGE", 50)
    slow = glm.run("What is it?", [big, media["png"]], generation=GenerationOptions(max_new_tokens=1))
    spec = glm.image_spec
    h, w = smart_resize(2, 480, 640, factor=spec.factor, min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    assert [n for n in slow.notes if "--max-pixels" in n] == [
        f"the prompt took {slow.timings.prefill_s:.0f} s to read, {slow.usage.image_tokens:,} of its "
        f"{slow.usage.prompt_tokens:,} tokens for 2 images (up to {h * w // spec.factor**2:,} each); --max-pixels "
        f"{max_pixels_for(50, spec)} reads an image as at most ~50 tokens: faster, with less fine detail"]
    one = glm.run("What is it?", [big], generation=GenerationOptions(max_new_tokens=1))
    assert f"tokens for the image; --max-pixels {max_pixels_for(50, spec)} " in one.notes[-1]
    text = glm.run("What is it? " * 200, [media["png"]], generation=GenerationOptions(max_new_tokens=1))
    assert not any("--max-pixels" in n for n in text.notes)  # (mostly text)
