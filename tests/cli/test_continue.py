"""`glmv ask -c`: the last conversation continued from the shell, as one conversation of the Python
API continues it (the same prompt, token for token, and the same answer), with attachments kept by
path and sha256 (a changed file is refused) or, for stdin, by their bytes."""

from __future__ import annotations

import json

import pytest

import glmv_cli
from tests.cli.conftest import glmv_env, random_image, run_glmv
from tests.cli.test_errors import one_line_error

ARGS = ("--dtype", "float32", "--device", "cpu", "--max-new-tokens", "6", "--json")


@pytest.fixture
def env(tmp_path):
    return glmv_env(XDG_STATE_HOME=str(tmp_path / "state"))


def test_continuing_equals_one_conversation(tiny, media, env):
    first = run_glmv("ask", media["png"], "What is in the picture?", "--model", tiny, *ARGS, env=env)
    second = run_glmv("ask", "-c", "And the colours?", *ARGS, env=env)  # the model comes from the record
    third = run_glmv("ask", "-c", media["jpg"], "Compare it with this one", *ARGS, env=env)
    assert first.code == second.code == third.code == 0, second.err + third.err

    chat = glmv_cli.Session(str(tiny), device="cpu", dtype="float32").conversation()
    gen = glmv_cli.GenerationOptions(max_new_tokens=6)
    expected = [chat.run("What is in the picture?", [media["png"]], generation=gen),
                chat.run("And the colours?", generation=gen),
                chat.run("Compare it with this one", [media["jpg"]], generation=gen)]
    for run, want in zip((first, second, third), expected, strict=True):
        assert run.json["usage"]["prompt_tokens"] == want.usage.prompt_tokens
        assert run.json["completion_ids"] == want.completion_ids
    assert expected[2].usage.prompt_tokens > expected[1].usage.prompt_tokens > expected[0].usage.prompt_tokens


def test_stdin_bytes_are_kept_and_a_new_question_starts_over(tiny, media, env, tmp_path):
    first = run_glmv("ask", "-", "What is this?", "--model", tiny, *ARGS, input=media["png"].read_bytes(), env=env)
    by_path = run_glmv("ask", media["png"], "What is this?", "--model", tiny, *ARGS, env=glmv_env(
        XDG_STATE_HOME=str(tmp_path / "other")))
    assert first.code == by_path.code == 0
    follow = run_glmv("ask", "-c", "Why?", *ARGS, env=env)
    assert follow.code == 0, follow.err
    assert follow.json["usage"]["prompt_tokens"] > first.json["usage"]["prompt_tokens"]
    fresh = run_glmv("ask", "Why?", "--model", tiny, *ARGS, env=env)  # no -c: a new conversation
    assert fresh.json["usage"]["prompt_tokens"] < first.json["usage"]["prompt_tokens"]
    state = json.loads((tmp_path / "state" / "glmv" / "last.json").read_text())
    assert [t["question"] for t in state["turns"]] == ["Why?"]
    assert not list((tmp_path / "state" / "glmv" / "blobs").iterdir())  # stdin's bytes are no longer kept


def test_a_changed_file_and_nothing_to_continue_are_one_line_errors(tiny, env, tmp_path):
    one_line_error(run_glmv("ask", "-c", "And then?", "--model", tiny, env=env), 2, "no conversation to continue")
    picture = random_image(tmp_path / "p.png", 64, 64, seed=1)
    assert run_glmv("ask", picture, "What is it?", "--model", tiny, *ARGS, env=env).code == 0
    random_image(picture, 64, 64, seed=2)
    one_line_error(run_glmv("ask", "-c", "And then?", env=env), 2, "p.png changed since the conversation")
    picture.unlink()
    one_line_error(run_glmv("ask", "-c", "And then?", env=env), 2, "is gone from")
    one_line_error(run_glmv("ask", "-c", "--each", "q", env=env), 2, "leave out -c")


def test_after_map_reduce_or_each_c_says_there_is_nothing_to_continue(tiny, media, env):
    """They answer without a conversation to go on with: -c must not continue the one before them."""
    assert run_glmv("ask", media["png"], "What is it?", "--model", tiny, *ARGS, env=env).code == 0
    assert run_glmv("ask", "-c", "And then?", *ARGS, env=env).code == 0
    for command in (["pdf", media["pdf"], "Where?", "--map-reduce", "--dpi", "72"],
                    ["ask", media["png"], media["jpg"], "What?", "--each"]):
        assert run_glmv(*command, "--model", tiny, *ARGS, env=env).code == 0
        one_line_error(run_glmv("ask", "-c", "And then?", env=env), 2,
                       f"the last command ({command[-1] if command[0] == 'ask' else '--map-reduce'}) keeps no "
                       f"conversation to continue")


def test_no_history_keeps_nothing(tiny, tmp_path):
    env = glmv_env(XDG_STATE_HOME=str(tmp_path / "state"), GLMV_NO_HISTORY="1")
    assert run_glmv("ask", "Hello", "--model", tiny, *ARGS, env=env).code == 0
    assert not (tmp_path / "state").exists()
    one_line_error(run_glmv("ask", "-c", "And then?", "--model", tiny, env=env), 2, "no conversation to continue")


@pytest.mark.parametrize("value,kept", [("1", False), ("yes", False), ("0", True), ("false", True), ("off", True),
                                         ("", True)])
def test_no_history_reads_as_a_switch(monkeypatch, value, kept):
    from glmv_cli.app import history

    monkeypatch.setenv("GLMV_NO_HISTORY", value)
    assert history.enabled() is kept


def test_a_pdf_is_read_again_as_it_was(tiny, media, env):
    """`glmv pdf doc.pdf --pages 2 --dpi 72`, then -c: the page and DPI come back with it."""
    first = run_glmv("pdf", media["pdf"], "What is on it?", "--pages", "2", "--dpi", "72", "--model", tiny, *ARGS,
                     env=env)
    follow = run_glmv("ask", "-c", "And then?", *ARGS, env=env)
    assert first.code == follow.code == 0, first.err + follow.err
    chat = glmv_cli.Session(str(tiny), device="cpu", dtype="float32").conversation()
    gen, load = glmv_cli.GenerationOptions(max_new_tokens=6), glmv_cli.LoadOptions(pages="2", dpi=72)
    chat.run("What is on it?", [media["pdf"]], load=load, generation=gen)
    want = chat.run("And then?", generation=gen)
    assert follow.json["usage"]["prompt_tokens"] == want.usage.prompt_tokens
    assert follow.json["completion_ids"] == want.completion_ids


def test_chat_and_ask_continue_each_other(tiny, media, env, tmp_path):
    """ask, then `chat -c` (one message from a pipe), then `ask -c`: one conversation of three turns;
    /reset in a chat starts the kept conversation over."""
    first = run_glmv("ask", media["png"], "What is in the picture?", "--model", tiny, *ARGS, env=env)
    chat = run_glmv("chat", "-c", *ARGS[:-1], input="And the colours?\n", env=env)
    third = run_glmv("ask", "-c", "Compare them", *ARGS, env=env)
    assert first.code == chat.code == third.code == 0, chat.err + third.err
    assert "continuing the last conversation (1 turn)" in chat.err
    conversation = glmv_cli.Session(str(tiny), device="cpu", dtype="float32").conversation()
    gen = glmv_cli.GenerationOptions(max_new_tokens=6)
    conversation.run("What is in the picture?", [media["png"]], generation=gen)
    conversation.run("And the colours?", generation=gen)
    want = conversation.run("Compare them", generation=gen)
    assert third.json["usage"]["prompt_tokens"] == want.usage.prompt_tokens
    assert third.json["completion_ids"] == want.completion_ids

    assert run_glmv("chat", "-c", *ARGS[:-1], input="/reset\nHello\n", env=env).code == 0
    kept = json.loads((tmp_path / "state" / "glmv" / "last.json").read_text())
    assert [t["question"] for t in kept["turns"]] == ["Hello"]


def test_a_conversation_over_the_context_says_how_to_start_anew(tiny, media, env):
    assert run_glmv("ask", media["png"], "What is in the picture?", "--model", tiny, *ARGS, env=env).code == 0
    one_line_error(run_glmv("ask", "-c", "And then?", *ARGS, "--max-context", "30", env=env), 2,
                   "over the 30-token context", "or start a new conversation: ask without -c (the one -c "
                   "continues has 1 turn)")
    long = " ".join(["word"] * 12)
    chat = run_glmv("chat", "--model", tiny, *ARGS[:-1], "--max-context", "40", input=f"Hello\n{long}\n", env=env)
    assert chat.code == 0 and "over the 40-token context" in chat.err and "; or /reset to start a new" in chat.err
