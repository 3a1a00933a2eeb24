"""The shipped demo checkpoint answers held-out questions correctly through the real `glmv` CLI.

A fast subset of `python -m glmv_cli.demo.evaluate`: a few fresh examples per task (a seed of the
"eval" split training never drew from), asked with `glmv ask FILE QUESTION --model demo --json`.
Thresholds sit below the accuracy measured on 50 per task (closing note of issue 20) and far above
chance (1/6 colours, 1/3 shapes, 1/6 counts, ~1/100 numbers, ~1/5 pages, ~1/8 seconds).
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from glmv_cli.demo import spec, train
from glmv_cli.demo.evaluate import TASKS, accuracy, evaluate
from glmv_cli.loading import DEMO_FOLDER, resolve_checkpoint

# Skipped only in a checkout without the checkpoint (it is built by `python -m glmv_cli.demo.train`).
pytestmark = pytest.mark.skipif(not (DEMO_FOLDER / "model.safetensors").is_file(),
                                reason="the demo checkpoint is not built yet (python -m glmv_cli.demo.train)")

PER_TASK = 12  # at seed 1000 the shipped checkpoint gets 8, 12, 12, 12, 11, 12 of 12 right (MIN_RIGHT's order);
# on 296 per task (README) it got 90.5%, 99.0%, 100%, 90.9%, 98.6%, 99.7%. Seed 1000 is a hard draw for
# counting (24 examples: 18 right; the checkpoint before it: 13), hence a counting floor of 7.
MIN_RIGHT = {"shapes_count": 7, "shapes_color": 11, "shapes_shape": 11, "numbers": 10, "pdf": 10, "video": 11}
README_FIRST = ("examples/shapes.png", "What color is the circle?", "green")
ROOT = Path(__file__).resolve().parents[2]


def test_demo_resolves_to_the_packaged_checkpoint(tmp_path, monkeypatch):
    assert resolve_checkpoint("demo") == DEMO_FOLDER
    assert (DEMO_FOLDER / "model.safetensors").stat().st_size < 25 * 2**20  # the size cap
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("demo") == Path("demo")  # a checkpoint folder named demo wins


def test_spec_writes_the_shipped_folder_but_its_weights(tmp_path):
    """The training command the shipped checkpoint records (training.log's first line) writes its
    config, tokenizer and side files byte for byte, so a change to spec.py ships with a retrained
    checkpoint or not at all."""
    command = (DEMO_FOLDER / "training.log").read_text().splitlines()[0]
    args = train.arguments().parse_args(shlex.split(command.split("glmv_cli.demo.train", 1)[1]))
    spec.write_spec(tmp_path, seed=args.seed, thinking=args.thinking)
    written = sorted(p.name for p in tmp_path.iterdir())
    shipped = sorted(p.name for p in DEMO_FOLDER.iterdir() if p.name not in ("model.safetensors", "training.log"))
    assert written == shipped
    assert [n for n in written if (tmp_path / n).read_bytes() != (DEMO_FOLDER / n).read_bytes()] == []


@pytest.mark.parametrize("quantize", [None, "int4"])
def test_held_out_accuracy_per_task(quantize, monkeypatch):
    """The same floors with --quantize int4 (GLMV_QUANTIZE, read by every command): the trained
    model keeps its answers with its decoder in 4 bits (at seed 1000 the same 8, 12, 12, 12, 11, 12)."""
    if quantize:
        monkeypatch.setenv("GLMV_QUANTIZE", quantize)
    outcomes = evaluate("demo", seed=1000, per_task=PER_TASK)
    right = {t: round(a * PER_TASK) for t, a in accuracy(outcomes).items()}
    assert set(right) == set(TASKS)
    wrong = [o for o in outcomes if not o.ok]
    assert all(right[t] >= MIN_RIGHT[t] for t in TASKS), (right, wrong)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")
def test_readme_first_command_thinks_then_answers_in_a_terminal():
    from tests.cli.tmux import Tmux

    path, question, answer = README_FIRST
    assert f'glmv ask {path} "{question}" --model demo' in (ROOT / "README.md").read_text()
    term = Tmux(ROOT)
    try:
        term.type(f'glmv ask {path} "{question}" --model demo')
        screen = term.wait_for_shell(timeout=120)
        lines = [line.rstrip() for line in screen.rstrip("\n").splitlines()]
        start = next(i for i, line in enumerate(lines) if line.startswith("$ glmv ask"))
        thinking, blank, shown, prompt = lines[start + 1:start + 5]
        assert "circle" in thinking and answer in thinking  # the reasoning, first
        assert blank == "" and shown == answer and prompt == "$"  # then the answer alone
        assert "\x1b[2m" in term.screen(escapes=True)  # the reasoning is dim
    finally:
        term.close()
