"""Drafts from text the answer may repeat (glmv_cli/lookup.py), through the real CLI: a PDF page's
text layer, which the model sees only as the page's image, and the answers before (--each) are
drafted from; the answer is the same, and --json's usage counts the drafted ids the model drew."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import run_glmv
from tests.cli.crafted import write_crafted

# the model reads the page aloud: its thinking is the page's words, a few to a token
SCRIPT = ["<think>", "The page says", " one two", " three four", " five six", " seven eight", "</think>",
          "<answer>", "eight", "</answer>", "<|endoftext|>"]
PAGE_TEXT = "The page says one two three four five six seven eight"


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> Path:
    return write_crafted(tmp_path_factory.mktemp("reader"), SCRIPT)


def pdf(path: Path, text: str | None) -> Path:
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page(width=420, height=300)
    if text:
        page.insert_text((20, 60), text, fontsize=12)
    page.draw_rect(pymupdf.Rect(20, 100, 120, 200), color=(0, 0, 1), fill=(0, 0, 1))
    doc.save(path)
    return path


def ask(reader: Path, document: Path, *extra: str) -> dict:
    run = run_glmv("pdf", document, "What is the last number?", "--model", reader, "--json", *extra)
    assert run.code == 0, run.err
    return json.loads(run.out)


def test_a_pdf_page_s_text_layer_is_drafted_from(reader, tmp_path):
    with_layer = ask(reader, pdf(tmp_path / "words.pdf", PAGE_TEXT))
    scan = ask(reader, pdf(tmp_path / "scan.pdf", None))
    assert with_layer["raw"] == scan["raw"] == "".join(SCRIPT[:-1])
    assert with_layer["answer"] == "eight"
    # after "The page says", " one two": the layer's next ids; the script has 4 words-pairs in a row
    assert with_layer["usage"]["accepted_drafts"] >= 3
    assert scan["usage"]["accepted_drafts"] == 0


def test_with_text_the_layer_is_in_the_prompt_and_drafted_from_there(reader, tmp_path):
    got = ask(reader, pdf(tmp_path / "words.pdf", PAGE_TEXT), "--with-text")
    assert got["answer"] == "eight" and got["usage"]["accepted_drafts"] >= 3


def test_no_drafts_when_turned_off(reader, tmp_path):
    from tests.cli.conftest import glmv_env

    run = run_glmv("pdf", pdf(tmp_path / "words.pdf", PAGE_TEXT), "What is the last number?", "--model", reader,
                   "--json", env=glmv_env(GLMV_SPECULATE="0"))
    assert run.code == 0, run.err
    got = json.loads(run.out)
    assert got["raw"] == "".join(SCRIPT[:-1])
    assert got["usage"]["drafted_tokens"] == got["usage"]["accepted_drafts"] == 0


def test_each_file_s_answer_drafts_from_the_answers_before(scripted, media):
    """--each: answers to one question about several files are alike (here, the same): the second
    and third draft from the first."""
    files = [media["png"], media["jpg"], media["png"]]
    run = run_glmv("ask", *files, "Where is the blue square?", "--model", scripted, "--each", "--json")
    assert run.code == 0, run.err
    lines = [json.loads(line) for line in run.out.splitlines()]
    assert len({d["raw"] for d in lines}) == 1
    accepted = [d["usage"]["accepted_drafts"] for d in lines]
    assert accepted[0] == 0 and min(accepted[1:]) >= 5, accepted


def test_the_next_process_drafts_from_the_last_answers_kept_on_disk(scripted, reader, media, tmp_path):
    """A script asking about one file after another, one process each: each drafts from the answer
    the process before kept (app/kept_answers.py). Another checkpoint's answers, a corrupt file and
    GLMV_NO_HISTORY=1 give no drafts and change nothing."""
    from tests.cli.conftest import glmv_env

    state = tmp_path / "state"
    env = glmv_env(XDG_STATE_HOME=str(state))

    def ask_about(image, model=scripted, environment=env) -> dict:
        run = run_glmv("ask", image, "Where is the blue square?", "--model", model, "--json", env=environment)
        assert run.code == 0, run.err
        return json.loads(run.out)

    first, second = ask_about(media["png"]), ask_about(media["jpg"])
    assert first["raw"] == second["raw"]
    assert first["usage"]["accepted_drafts"] == 0 and second["usage"]["accepted_drafts"] >= 5
    kept = state / "glmv" / "last.answers.json"
    assert kept.is_file()
    ask_about(media["png"], model=reader)  # another checkpoint: its own answers replace them
    assert ask_about(media["png"])["usage"]["accepted_drafts"] == 0
    kept.write_text("{not json")
    got = ask_about(media["png"])
    assert got["raw"] == first["raw"] and got["usage"]["accepted_drafts"] == 0
    quiet = glmv_env(XDG_STATE_HOME=str(tmp_path / "other"), GLMV_NO_HISTORY="1")
    ask_about(media["png"], environment=quiet)
    assert ask_about(media["jpg"], environment=quiet)["usage"]["accepted_drafts"] == 0
    assert not (tmp_path / "other" / "glmv" / "last.answers.json").exists()
