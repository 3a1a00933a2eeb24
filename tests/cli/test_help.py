"""--help with examples for every command, shell completion, and a CLI that starts without torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.cli.conftest import glmv_env, run_glmv


@pytest.mark.parametrize("command", ["ask", "pdf", "video", "chat", "info"])
def test_help_has_examples(command):
    run = run_glmv(command, "--help")
    assert run.code == 0
    assert "Examples" in run.out
    examples = run.out.split("Examples", 1)[1]
    assert f"glmv {command}" in examples
    assert "Traceback" not in run.err


def test_top_level_help_lists_the_commands():
    run = run_glmv("--help")
    assert run.code == 0
    for command in ("ask", "pdf", "video", "chat", "info"):
        assert f" {command} " in run.out


@pytest.mark.parametrize("command", ["ask", "pdf", "video", "chat", "serve", "info", "quantize"])
def test_every_options_help_survives_the_markdown_rendering(command):
    """The help is rendered as markdown: an option's text such as `</think>` written bare would be
    taken for HTML and dropped. Each sentence of each option's help must show, whole."""
    import typer

    from glmv_cli.cli import app

    run = run_glmv(command, "--help", env=glmv_env(COLUMNS="3000"))
    assert run.code == 0
    shown = re.sub(r"\s+", " ", run.out.replace("\u2502", " "))
    params = typer.main.get_command(app).commands[command].params
    helps = [p.help for p in params if getattr(p, "help", None)]
    assert len(helps) >= 3
    for text in helps:
        text = re.sub(r"\s+", " ", text.replace("\\[", "[").replace("`", ""))
        for sentence in re.split(r"(?<=[.;:])\s", text):
            assert sentence.strip() in shown, sentence


def test_shell_completion():
    env = glmv_env(_GLMV_COMPLETE="complete_bash", COMP_WORDS="glmv ask --device ", COMP_CWORD="3")
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "glmv")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.split() == ["auto", "cpu", "cuda", "mps"]
    env.update(COMP_WORDS="glmv vi", COMP_CWORD="1")
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "glmv")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.split() == ["video"]


def test_help_and_parsing_do_not_import_torch():
    code = "import sys, glmv_cli.cli, glmv_cli; glmv_cli.Session; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], env=glmv_env(), capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
