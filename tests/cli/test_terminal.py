"""What a person sees: `glmv ask` and `glmv chat` in a real terminal (tmux, 120x40), read back with
capture-pane. Reasoning dim and answer plain, separated by a blank line; the status line shows
while something slow runs and is gone afterwards; no stray escape sequences; Ctrl-C and Ctrl-D."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from tests.cli.conftest import local_server
from tests.cli.crafted import ANSWER, THINKING

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")

SGR = re.compile(r"\x1b\[[0-9;]*m")
DIM_THINKING = re.compile(r"\x1b\[2m" + re.escape(THINKING))


@pytest.fixture
def term(tmp_path, scripted, looping, media):
    """A terminal in a folder with short names for the files (commands fit on one line):
    model/ (scripted), loop/ (looping), a.png, c.jpg."""
    from tests.cli.tmux import Tmux

    for name, target in (("model", scripted), ("loop", looping), ("a.png", media["png"]), ("c.jpg", media["jpg"])):
        (tmp_path / name).symlink_to(target)
    t = Tmux(tmp_path)
    yield t
    t.close()


@pytest.fixture(scope="module")
def slow_server(media):
    """Serves the PNG after 3 s, so the status line has time to be seen."""
    routes = {"/photo.png": (200, "image/png", media["png"].read_bytes(), True)}
    with local_server(routes, slow={"/photo.png": 3}) as base:
        yield f"{base}/photo.png"


def lines(screen: str) -> list[str]:
    return [line.rstrip() for line in screen.rstrip("\n").splitlines()]


def assert_clean(screen: str) -> None:
    """No escape sequence leaked as text (tmux interprets real ones; leftovers show as text)."""
    for junk in ("\x1b", "[2m", "[0m", "^[", "\ufffd[", "\r"):
        assert junk not in screen, (junk, screen)


def test_ask_shows_status_then_reasoning_dim_then_the_answer(term, slow_server):
    term.type(f"glmv ask {slow_server} 'Where is the blue square?' --model model")
    term.wait_for("fetching " + slow_server, timeout=30)  # the status line, while the server sleeps
    screen = term.wait_for_shell()
    assert_clean(screen)
    assert lines(screen) == [
        f"$ glmv ask {slow_server} 'Where is the blue square?' --model model",
        THINKING,
        "",
        ANSWER,
        "$",
    ]  # the status line (fetching, reading, loading weights) is gone
    styled = term.screen(escapes=True)
    assert DIM_THINKING.search(styled), styled  # reasoning is dim
    answer_line = next(line for line in styled.splitlines() if ANSWER in line)
    assert "\x1b[2m" not in answer_line.split(ANSWER)[0] or "\x1b[0m" in answer_line.split(ANSWER)[0]


def test_no_color_means_no_escape_codes(term):
    term.type("NO_COLOR=1 glmv ask a.png 'where?' --model model")
    term.wait_for_shell()
    styled = term.screen(escapes=True)
    assert not SGR.search(styled.split("NO_COLOR=1", 1)[1]), styled
    assert lines(term.screen())[1:4] == [THINKING, "", ANSWER]


def test_errors_and_notes_on_the_terminal(term):
    term.type("glmv ask missing.png 'where?' --model model")
    assert term.exit_code() == 2
    assert "glmv: error: missing.png: no such file; check the path" in term.screen()
    term.type("glmv ask q --model model --max-new-tokens 3")
    assert term.exit_code() == 0
    screen = term.screen()
    assert_clean(screen)
    assert "glmv: note: the model reached 3 new tokens while still thinking" in screen


def test_ctrl_c_in_ask(term):
    term.type("glmv ask sing --model loop --max-new-tokens 60000 -R")
    term.wait_for("la la la la")
    term.key("C-c")
    term.wait_for("stopped (Ctrl-C)")
    assert term.exit_code() == 130
    screen = term.screen()
    assert "Traceback" not in screen
    assert_clean(screen)
    partial = next(line for line in lines(screen) if line.startswith("la la"))
    assert set(partial.split()) == {"la"}  # the partial answer stays, on its own line


def test_chat_turns_attach_save_and_ctrl_d(term, tmp_path):
    term.type("glmv chat a.png --model model")
    term.wait_for(">>>")
    term.type("Where is the blue square?")
    term.wait_for(ANSWER)
    term.type("/attach c.jpg")
    term.wait_for("attached c.jpg")
    term.type("And in this one?")
    term.wait_for_count(ANSWER, 2)
    term.type("/save chat.md")
    screen = term.wait_for("saved to chat.md")
    term.key("C-d")
    assert term.exit_code() == 0
    screen = term.screen()
    assert_clean(screen)
    shown = lines(screen)
    start = shown.index(">>> Where is the blue square?")
    assert shown[start + 1:start + 4] == [THINKING, "", ANSWER]
    assert ">>> And in this one?" in shown
    assert screen.count(THINKING) == 2 and screen.count(ANSWER) == 2
    assert "loading weights" not in screen and "reading the prompt" not in screen
    md = (tmp_path / "chat.md").read_text()
    assert md.count(ANSWER) == 2 and "Let me look" not in md and "c.jpg" in md


def at_the_prompt(term, timeout: float = 30) -> None:
    """Until the chat is back at its >>> prompt (its answer ended)."""
    deadline = time.monotonic() + timeout
    while lines(term.screen())[-1] != ">>>":
        assert time.monotonic() < deadline, term.screen()
        time.sleep(0.1)


def test_chat_completes_with_tab_and_recalls_the_last_chats_lines_with_up(term):
    term.type("glmv chat --model model")
    term.wait_for(">>>")
    term.type("/att", enter=False)
    term.key("Tab")
    term.wait_for(">>> /attach")  # (and a space, which the pane does not show)
    term.key("Tab", "Tab")  # several files: their names listed, the line drawn again under them
    screen = term.wait_for("a.png  c.jpg  loop/  model/")
    assert lines(screen)[-1] == ">>> /attach"
    term.type("c.", enter=False)
    term.key("Tab")
    term.wait_for(">>> /attach c.jpg")
    term.key("Enter")
    term.wait_for("attached c.jpg to your next message")
    term.type("Where is the blue square?")
    term.wait_for(ANSWER)
    at_the_prompt(term)  # (a Ctrl-D typed while the answer is still being written is not an EOF)
    term.key("C-d")
    assert term.exit_code() == 0
    term.type("clear")
    term.wait_for_shell()
    term.type("glmv chat --model model")  # a new chat: Up brings back the last one's lines
    term.wait_for(">>>")
    term.key("Up")
    term.wait_for(">>> Where is the blue square?")
    term.key("Up")
    term.wait_for(">>> /attach c.jpg")
    term.key("C-u", "C-d")
    assert term.exit_code() == 0
    assert_clean(term.screen())


def test_a_paste_of_several_lines_is_one_chat_message_and_so_is_a_triple_quoted_block(term, tmp_path):
    term.type("glmv chat --model model -R")
    term.wait_for(">>>")
    (tmp_path / "paste.txt").write_text("first line\nsecond line\nWhere is the blue square?")
    term.paste(tmp_path / "paste.txt")
    term.wait_for("Where is the blue square?")
    time.sleep(0.5)
    assert ANSWER not in term.screen()  # (not sent line by line)
    term.key("Enter")
    term.wait_for(ANSWER)
    term.type('"""Read this:')
    term.wait_for("...")
    term.type("it says hello")
    term.type('What does it say?"""')
    term.wait_for_count(ANSWER, 2)
    term.type("/save t.md")
    term.wait_for("saved to t.md")
    term.key("C-d")
    assert term.exit_code() == 0
    assert term.screen().count(ANSWER) == 2
    md = (tmp_path / "t.md").read_text()
    assert "first line\nsecond line\nWhere is the blue square?" in md
    assert "Read this:\nit says hello\nWhat does it say?" in md


def test_ctrl_c_in_chat_returns_to_the_prompt(term):
    term.type("glmv chat --model loop --max-new-tokens 60000 -R")
    term.wait_for(">>>")
    term.type("sing")
    term.wait_for("la la la la")
    term.key("C-c")
    screen = term.wait_for("stopped (Ctrl-C)")
    at_the_prompt(term)  # back at the prompt, still in the chat
    term.key("C-c")  # at the prompt: a fresh prompt, not an exit
    time.sleep(0.5)
    term.key("C-d")
    assert term.exit_code() == 0
    screen = term.screen()
    assert "Traceback" not in screen
    assert_clean(screen)
