"""The renderers on in-memory streams (terminal or not), --extract's code-block rule, grounding
boxes, and --extract end to end on a model that answers with a code block."""

from __future__ import annotations

import io
import json

import pytest

from glmv_cli.app.boxes import Box, boxes_json, draw_boxes, find_boxes
from glmv_cli.app.session import Done, Note, Progress, Result, Timings, Usage
from glmv_cli.render import JsonlRenderer, JsonRenderer, Terminal, TextRenderer, extract_code
from glmv_cli.stream import Answer, Thinking
from tests.cli.conftest import run_glmv
from tests.cli.crafted import write_crafted

CODE_ANSWER = "Here you go:\n```python\nprint('hi')\nprint('there')\n```\nRun it with python."


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def result(answer="A", thinking="T") -> Result:
    return Result(model="m", thinking=thinking, answer=answer, raw=f"<think>{thinking}</think><answer>{answer}"
                  "</answer>", boxes=[], images=[], usage=Usage(10, 4, 3), timings=Timings(1.0, 0.1, 0.2, 50.0),
                  finish_reason="stop")


EVENTS = [Progress("loading"), Thinking("Let me"), Thinking(" think."), Answer("It is"), Answer(" 42", boxed=True),
          Note("careful"), Done(result())]


def render(renderer_cls, tty: bool, monkeypatch, no_color=False, **kwargs):
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    out, err = Stream(tty), Stream(tty)
    renderer = renderer_cls(Terminal(out=out, err=err), **kwargs)
    for event in EVENTS:
        renderer.handle(event)
    return out.getvalue(), err.getvalue()


def test_text_renderer_off_a_terminal(monkeypatch):
    out, err = render(TextRenderer, False, monkeypatch)
    assert out == "It is 42\n"
    assert err == "Let me think.\nglmv: note: careful\n"


def test_an_error_after_half_a_line_starts_a_line_of_its_own(monkeypatch):
    """A server that dies mid-answer: the error is not glued to the reasoning (stderr) or, on a
    terminal, to the half-written answer (stdout)."""
    from glmv_cli import render as r

    monkeypatch.setenv("NO_COLOR", "1")
    for tty in (False, True):
        out, err = Stream(tty), Stream(tty)
        renderer = TextRenderer(Terminal(out=out, err=err))
        renderer.handle(Thinking("Let me thi"))
        r.error("the connection was lost")
        assert err.getvalue() == "Let me thi\nglmv: error: the connection was lost\n"
        renderer.handle(Answer("It is"))
        r.error("lost again")
        assert out.getvalue() == ("It is\n" if tty else "It is")  # (off a terminal stdout is the answer alone)
        assert err.getvalue().endswith("\nglmv: error: lost again\n")


def test_text_renderer_on_a_terminal(monkeypatch):
    out, err = render(TextRenderer, True, monkeypatch)
    assert out == "It is 42\n"  # stdout is never styled
    status, rest = err.split("\x1b[2K", 1)  # the spinner line, then erased (cursor up, clear line)
    assert "loading" in status and "\x1b[1A" in status
    assert rest == "\x1b[2mLet me\x1b[0m\x1b[2m think.\x1b[0m\n\n\x1b[33mglmv: note: \x1b[0mcareful\n"


def test_no_color_terminal_has_no_escape_codes(monkeypatch):
    out, err = render(TextRenderer, True, monkeypatch, no_color=True)
    assert "\x1b" not in out + err
    assert "Let me think.\n\n" in err  # a blank line before the answer (both on one screen)
    assert "\rloading…\r" in err  # a carriage-return status line, erased again


def test_hidden_reasoning_and_extract(monkeypatch):
    out, err = render(TextRenderer, False, monkeypatch, hide_reasoning=True)
    assert (out, err) == ("It is 42\n", "glmv: note: careful\n")
    out, _ = render(TextRenderer, False, monkeypatch, extract=True)
    assert out == "It is 42\n"  # no code block: the whole answer


def test_json_and_jsonl(monkeypatch):
    out, err = render(JsonRenderer, False, monkeypatch)
    assert json.loads(out)["usage"] == {"prompt_tokens": 10, "image_tokens": 4, "completion_tokens": 3,
                                        "cached_tokens": 0, "drafted_tokens": 0, "accepted_drafts": 0,
                                        "reasoning_tokens": 0}
    assert err == "glmv: note: careful\n"
    out, _ = render(JsonlRenderer, False, monkeypatch)
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert types == ["progress", "thinking", "thinking", "answer", "answer", "note", "done"]


def test_control_characters_are_neutralised_on_a_terminal_only(monkeypatch):
    for tty in (False, True):
        out, err = Stream(tty), Stream(tty)
        renderer = TextRenderer(Terminal(out=out, err=err))
        renderer.handle(Answer("a\x1b[2Jb\rc"))
        renderer.finish()
        assert out.getvalue() == ("a\ufffd[2Jb\ufffdc\n" if tty else "a\x1b[2Jb\rc\n")


@pytest.mark.parametrize("text,code", [
    (CODE_ANSWER, "print('hi')\nprint('there')"),
    ("```\nx = 1\n```\n```\ny = 2\n```", "x = 1"),
    ("~~~sh\nls -l\n~~~", "ls -l"),
    ("Start:\n```js\nlet a = 1;\n", "let a = 1;"),  # cut off: runs to the end
    ("no code here", "no code here"),
    ("inline `code` only", "inline `code` only"),
])
def test_extract_code(text, code):
    assert extract_code(text) == code


def test_find_boxes_and_pixels():
    text = ("The cat <|begin_of_box|>[[100, 200, 300, 400]]<|end_of_box|> and the dog "
            "<|begin_of_box|>[500,500,1000,1000]<|end_of_box|>; also [[1,2,3,4],[5,6,7,8]]; not [1, 2, 3] "
            "nor [2000, 0, 0, 0] nor (1, 2, 3, 4)")
    boxes = find_boxes(text)
    assert [b.coords for b in boxes] == [[100, 200, 300, 400], [500, 500, 1000, 1000], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert Box(100, 200, 300, 400).to_pixels(640, 480) == [64, 96, 192, 192]
    assert Box(900, 900, 100, 100).to_pixels(10, 10) == [1, 1, 9, 9]  # ordered
    assert boxes_json(boxes[:1], [("a.png", (640, 480)), ("b.png", (100, 50))]) == [
        {"box": [100, 200, 300, 400], "pixels": [{"image": "a.png", "box": [64, 96, 192, 192]},
                                                  {"image": "b.png", "box": [10, 10, 30, 20]}]}]


def test_draw_boxes_outlines_in_red():
    from PIL import Image

    image = Image.new("RGB", (200, 100), (255, 255, 255))
    drawn = draw_boxes(image, [Box(100, 200, 500, 800)], width=2)
    assert drawn.getpixel((20, 50)) == (255, 0, 0)  # left edge: x = 0.1 * 200
    assert drawn.getpixel((60, 50)) == (255, 255, 255)  # inside
    assert image.getpixel((20, 50)) == (255, 255, 255)  # the original is untouched


def test_extract_end_to_end(tmp_path):
    script = ["<think>", "Let me look.", "</think>", "<answer>", CODE_ANSWER, "</answer>", "<|endoftext|>"]
    folder = write_crafted(tmp_path / "coder", script)
    run = run_glmv("ask", "write code", "--model", folder, "-x")
    assert run.code == 0, run.err
    assert run.out == "print('hi')\nprint('there')\n"
    assert "Let me look." in run.err
    full = run_glmv("ask", "write code", "--model", folder, "-R")
    assert full.out == CODE_ANSWER + "\n"


def test_errors_go_to_todays_stderr_once_the_last_terminals_stream_is_closed(monkeypatch):
    """`render.error` writes through the last Terminal made; when a harness (or a program embedding
    glmv) has closed that Terminal's streams since, it writes to the current sys.stderr instead of
    raising "I/O operation on closed file"."""
    from glmv_cli import render as render_mod

    old = Stream(tty=False)
    Terminal(out=Stream(tty=False), err=old)
    old.close()
    now = Stream(tty=False)
    monkeypatch.setattr("sys.stderr", now)
    render_mod.error("the file is missing")
    assert now.getvalue() == "glmv: error: the file is missing\n"
