"""Ctrl-C (a real SIGINT to a generating process) and `glmv chat` driven through a pipe."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

from tests.cli.conftest import glmv_env, run_glmv
from tests.cli.crafted import ANSWER


class Reader(threading.Thread):
    """Collects a pipe's bytes as they arrive."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe, self.data = pipe, b""

    def run(self):
        for chunk in iter(lambda: self.pipe.read1(4096), b""):
            self.data += chunk

    def wait_for(self, text: bytes, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.data and time.monotonic() < deadline:
            time.sleep(0.05)
        return text in self.data


def test_ctrl_c_stops_generation_keeps_the_partial_answer_and_exits_130(looping):
    proc = subprocess.Popen([sys.executable, "-m", "glmv_cli", "ask", "sing", "--model", str(looping),
                             "--max-new-tokens", "60000"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=glmv_env())
    out, err = Reader(proc.stdout), Reader(proc.stderr)
    out.start(), err.start()
    try:
        assert out.wait_for(b"la la la"), err.data
        assert proc.poll() is None  # still generating: 60000 tokens take far longer than this
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    out.join(5), err.join(5)
    assert code == 130
    text = out.data.decode()
    assert text.startswith("la la la") and text.endswith("\n") and text.count("\n") == 1
    assert set(text.strip().split()) == {"la"}
    assert b"Let me look." in err.data and b"stopped (Ctrl-C)" in err.data and b"Traceback" not in err.data


def test_chat_through_a_pipe(scripted, media, tmp_path):
    script = "\n".join([
        "Where is the blue square?", "/save transcript.md", "And now?", "/reset", "Again?", "/attach nothing.png",
        "/bogus", "",
    ])
    run = run_glmv("chat", media["png"], "--model", scripted, "--jsonl", input=script, cwd=tmp_path,
                   env=glmv_env(XDG_STATE_HOME=str(tmp_path / "state")))  # no cache kept by an earlier test
    assert run.code == 0, run.err
    done = [json.loads(line) for line in run.out.splitlines() if json.loads(line)["type"] == "done"]
    assert [d["answer"] for d in done] == [ANSWER] * 3
    first, second, after_reset = (d["usage"]["prompt_tokens"] for d in done)
    assert done[0]["usage"]["image_tokens"] == 12 and done[1]["usage"]["image_tokens"] == 12  # the image stays
    assert second > first + 10  # the history is in the prompt
    # the second turn ran only what it added; after /reset nothing matched past the first tokens
    assert [d["usage"]["cached_tokens"] for d in done][:2] == [0, first]
    assert done[2]["usage"]["cached_tokens"] < 10
    assert after_reset < first  # no image, no history
    assert "nothing.png: no such file" in run.err and "unknown command /bogus" in run.err
    md = (tmp_path / "transcript.md").read_text()
    assert "Where is the blue square?" in md and ANSWER in md and "Let me look" not in md and "a.png" in md


def test_chat_attach_takes_globs_and_dropped_paths(scripted, media, tmp_path):
    """/attach shots/*.png attaches every match; a path a terminal pastes for a dropped file, in
    quotes or with escaped spaces, is that file."""
    shots = tmp_path / "my shots"
    shots.mkdir()
    for name in ("a.png", "b.png", "notes.txt"):
        (shots / name).write_bytes(media["png"].read_bytes() if name.endswith(".png") else b"hi")
    script = "\n".join([f"/attach {shots}/*.png", "one?", f"/attach '{shots}/a.png'", "two?",
                        "/attach " + str(shots / "b.png").replace(" ", "\\ "), "three?", ""])
    run = run_glmv("chat", "--model", scripted, "--jsonl", input=script)
    assert run.code == 0, run.err
    done = [json.loads(line) for line in run.out.splitlines() if json.loads(line)["type"] == "done"]
    assert [d["usage"]["image_tokens"] for d in done] == [24, 36, 48]  # two images, then one more, one more
    assert f"attached {shots}/a.png, {shots}/b.png to your next message" in run.err


def test_chat_takes_a_message_of_several_lines_between_triple_quotes(scripted, tmp_path):
    """As ollama's prompt does: the lines between two \"\"\" are one message; a pipe that ends
    inside a block still sends what it holds."""
    script = "\n".join(['"""Read this log:', "error: disk full", "   at line 3", 'What failed?"""', '"""one"""',
                        '"""', "/reset the counter, then explain", '"""',  # (a block is a message, not /reset)
                        "/save t.md", '"""', "the end of the file", "closes it"])
    run = run_glmv("chat", "--model", scripted, "--jsonl", input=script, cwd=tmp_path)
    assert run.code == 0, run.err
    done = [json.loads(line) for line in run.out.splitlines() if json.loads(line)["type"] == "done"]
    assert len(done) == 4 and "conversation cleared" not in run.err
    md = (tmp_path / "t.md").read_text()
    assert "Read this log:\nerror: disk full\n   at line 3\nWhat failed?" in md and '"""' not in md
    assert "\none\n" in md and "\n/reset the counter, then explain\n" in md


def test_chat_plain_output_is_answers_only(scripted):
    run = run_glmv("chat", "--model", scripted, "-R", input="one\ntwo\n")
    assert (run.code, run.out) == (0, f"{ANSWER}\n{ANSWER}\n")


def test_chat_missing_attachment_fails_at_start(scripted):
    run = run_glmv("chat", "nothing.png", "--model", scripted, input="hi\n")
    assert run.code == 2 and "nothing.png: no such file" in run.err
