"""Evaluate a demo checkpoint through the real `glmv` command on fresh, held-out examples.

    python -m glmv_cli.demo.evaluate [--model demo] [--seed 1] [--per-task 50] [--subprocess]

Examples come from the "eval" split (training draws from "train", so no example is shared), as
files in a temporary folder: PNG images, PDFs written by PyMuPDF, MP4s encoded by PyAV. Each is
asked with `glmv ask FILE "QUESTION" --model MODEL --json` — in this process through the Typer app
(the same argument parsing, loaders, session and rendering; the model is loaded per question as
the command does), or with --subprocess as a separate `python -m glmv_cli` process. An answer is
right when it equals the expected one exactly. It agrees with the thinking when it equals the
answer the thinking's description implies (agreement.py). Prints a table on stderr and, as the
last line on stdout, a JSON object with the accuracy and the agreement per task.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from glmv_cli.demo import tasks
from glmv_cli.demo.agreement import implied_answer
from glmv_cli.demo.data import example_rng

TASKS = ("shapes_count", "shapes_color", "shapes_shape", "numbers", "pdf", "video")
TARGETS = {"shapes_count": 0.80, "shapes_color": 0.90, "shapes_shape": 0.90, "numbers": 0.80, "pdf": 0.90,
           "video": 0.90}


@dataclass(frozen=True)
class Outcome:
    task: str
    file: str
    question: str
    expected: str
    answer: str
    ok: bool
    thinking: str = ""

    @property
    def agrees(self) -> bool:
        """The answer is the one the thinking implies."""
        return implied_answer(self.task, self.thinking) == self.answer


def held_out(task: str, seed: int, count: int, folder: Path) -> Iterator[tasks.Example]:
    """`count` examples of one task from the eval split, attachments written into `folder`."""
    for index in range(count):
        rng = example_rng(f"eval-{task}", seed, index)
        yield tasks.as_file(tasks.make_example(task, rng, folder, index), folder, index)


def ask(model: str, example: tasks.Example, use_subprocess: bool) -> tuple[str, str]:
    """(thinking, answer) as `glmv ask FILE QUESTION --model MODEL --json` gives them ("" when it
    fails)."""
    args = ["ask", str(example.attachment), example.question, "--model", model, "--json"]
    if use_subprocess:
        done = subprocess.run([sys.executable, "-m", "glmv_cli", *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=300)
        code, out = done.returncode, done.stdout
    else:
        from typer.testing import CliRunner

        from glmv_cli.cli import app

        result = CliRunner().invoke(app, args)
        code, out = result.exit_code, result.stdout
    if code != 0:
        return "", ""
    result = json.loads(out.strip().splitlines()[-1])
    return str(result.get("thinking") or "").strip(), str(result.get("answer") or "").strip()


def evaluate(model: str, seed: int, per_task: int, task_names=TASKS, use_subprocess: bool = False,
             progress=None) -> list[Outcome]:
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="glmv-demo-eval-") as tmp:
        for task in task_names:
            for example in held_out(task, seed, per_task, Path(tmp)):
                thinking, answer = ask(model, example, use_subprocess)
                outcomes.append(Outcome(task, Path(example.attachment).name, example.question, example.answer,
                                        answer, answer == example.answer, thinking))
                if progress:
                    progress(outcomes[-1])
    return outcomes


def accuracy(outcomes: list[Outcome], key: str = "ok") -> dict[str, float]:
    """Share per task of outcomes whose `key` ("ok": right, "agrees": as the thinking implies) holds."""
    out = {}
    for task in dict.fromkeys(o.task for o in outcomes):
        mine = [o for o in outcomes if o.task == task]
        out[task] = sum(getattr(o, key) for o in mine) / len(mine)
    return out


def agreement(outcomes: list[Outcome]) -> dict[str, float]:
    """Share per task, and "all", of answers that agree with their own thinking."""
    return {**accuracy(outcomes, "agrees"), "all": sum(o.agrees for o in outcomes) / max(1, len(outcomes))}


def by_digits(outcomes: list[Outcome]) -> dict[str, tuple[int, int]]:
    """The numbers task split by how many digits the number has: {"one digit": (right, n), "two
    digits": (right, n)} (only the kinds that occur). Two-digit numbers fail differently (mostly one
    digit read twice), so the split says which part a change helped."""
    out = {}
    for digits, name in ((1, "one digit"), (2, "two digits")):
        mine = [o for o in outcomes if o.task == "numbers" and len(o.expected) == digits]
        if mine:
            out[name] = (sum(o.ok for o in mine), len(mine))
    return out


def table(outcomes: list[Outcome]) -> str:
    lines = [f"{'task':<14}{'n':>5}{'right':>7}{'accuracy':>10}{'target':>8}{'agrees':>8}"]
    agrees = agreement(outcomes)
    for task, acc in accuracy(outcomes).items():
        n = sum(o.task == task for o in outcomes)
        lines.append(f"{task:<14}{n:>5}{round(acc * n):>7}{acc:>10.1%}{TARGETS[task]:>8.0%}{agrees[task]:>8.0%}")
        if task == "numbers":
            split = by_digits(outcomes).items()
            lines += [f"  {name:<12}{k:>5}{right:>7}{right / k:>10.1%}" for name, (right, k) in split]
    lines.append(f"answers agreeing with their thinking: {agrees['all']:.1%} (target 98%)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-task", type=int, default=50)
    ap.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    ap.add_argument("--subprocess", action="store_true", help="run each question as its own glmv process")
    ap.add_argument("--verbose", action="store_true", help="print every question and answer")
    args = ap.parse_args(argv)

    def show(o: Outcome) -> None:
        if args.verbose or not o.ok:
            mark = "ok " if o.ok else "BAD"
            print(f"{mark} {o.task:<13} {o.file:<22} {o.question!r}: expected {o.expected!r}, got {o.answer!r}"
                  + ("" if o.agrees else f" (thinking: {o.thinking!r})"), file=sys.stderr, flush=True)

    outcomes = evaluate(args.model, args.seed, args.per_task, args.tasks, args.subprocess, show)
    print(table(outcomes), file=sys.stderr)
    print(json.dumps({"model": args.model, "seed": args.seed, "per_task": args.per_task,
                      "accuracy": accuracy(outcomes), "agreement": agreement(outcomes),
                      "numbers_by_digits": {k: right / n for k, (right, n) in by_digits(outcomes).items()}}))


if __name__ == "__main__":
    main()
