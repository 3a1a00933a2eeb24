"""Checkpoints, media files and a `glmv` runner shared by the CLI tests.

Every test drives the real `glmv` process (`python -m glmv_cli`) with one torch thread, stdin
closed unless a test pipes something in, and no terminal (tmux tests make their own).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli.crafted import ANSWER_SCRIPT, LOOP_SCRIPT, write_crafted
from tests.reference import write_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def glmv_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLMV_", "NO_COLOR", "FORCE_COLOR"))}
    # the repository first, then whatever the caller's path had (the GPU machine's carried wheels)
    path = os.pathsep.join([str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=path, TERM="dumb", COLUMNS="120",
               no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
    # a state folder of its own (the last conversation and its KV cache): a process reads nothing an
    # earlier test's kept; tests of -c and of the kept cache pass one folder to all their processes
    env["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="process-", dir=os.environ.get("XDG_STATE_HOME"))
    env.update(extra)
    return env


HOOKS = ROOT / "tests" / "oom_hook"  # sitecustomize: GLMV_TEST_OOM_ABOVE, GLMV_TEST_STEP_DELAY_MS


def hooked_env(**extra: str) -> dict[str, str]:
    """glmv_env with the test hooks on the path (the GLMV_TEST_ variables in `extra` switch them on)."""
    env = glmv_env(**extra)
    env["PYTHONPATH"] = os.pathsep.join([str(HOOKS), env["PYTHONPATH"]])
    return env


def slow_steps(monkeypatch, seconds: float = 0.01) -> None:
    """In this process: each decode step (one row or several) `seconds` slower, as a real model's is
    (GLMV_TEST_STEP_DELAY_MS does the same in a glmv process)."""
    from glmv_cli.model.glm4v import Glm4v

    for name in ("decode", "decode_rows"):
        plain = getattr(Glm4v, name)

        def slow(self, *args, _plain=plain, **kwargs):
            time.sleep(seconds)
            return _plain(self, *args, **kwargs)

        monkeypatch.setattr(Glm4v, name, slow)


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> dict:
        return json.loads(self.out)


def run_glmv(*args, input: bytes | str | None = None, env: dict | None = None, timeout: float = 120,
             cwd: Path | None = None) -> Run:
    """`glmv ARGS...` as a real process; stdin is closed unless `input` is given."""
    data = input.encode() if isinstance(input, str) else input
    done = subprocess.run([sys.executable, "-m", "glmv_cli", *map(str, args)], input=data,
                          stdin=None if data is not None else subprocess.DEVNULL, capture_output=True,
                          env=env or glmv_env(), timeout=timeout, cwd=cwd)
    return Run(done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """A tiny random checkpoint (transformers-loadable), for parity with the reference."""
    return write_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def scripted(tmp_path_factory) -> Path:
    """Greedy output: <think>Let me look. I see a blue square.</think><answer>The blue square is at
    <|begin_of_box|>[[120,250,500,750]]<|end_of_box|></answer>."""
    return write_crafted(tmp_path_factory.mktemp("scripted"), ANSWER_SCRIPT)


@pytest.fixture(scope="session")
def looping(tmp_path_factory) -> Path:
    """Greedy output: a short thought, then "la la la ..." forever (a long context)."""
    return write_crafted(tmp_path_factory.mktemp("looping"), LOOP_SCRIPT, text={"max_position_embeddings": 65536})



@pytest.fixture(scope="session")
def tool_scripted(tmp_path_factory) -> Path:
    """GLM-4.6V-style template; greedy output: a thought, then a get_weather call (tool_checkpoints.py)."""
    from tests.cli.tool_checkpoints import write_tool_scripted

    return write_tool_scripted(tmp_path_factory.mktemp("tool_scripted"))


@pytest.fixture(scope="session")
def tool_random(tmp_path_factory) -> Path:
    """GLM-4.6V-style template, random weights, the tool-call markers as added tokens."""
    from tests.cli.tool_checkpoints import write_tool_random

    return write_tool_random(tmp_path_factory.mktemp("tool_random"))

def random_image(path: Path, w: int, h: int, seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """Real files: two PNGs and a JPEG, a 3-page PDF, an MP4, a text file."""
    from tests.inputs.media import encode_video, write_pdf

    root = tmp_path_factory.mktemp("media")
    files = {
        "png": random_image(root / "a.png", 120, 80, seed=1),
        "png2": random_image(root / "b.png", 60, 90, seed=2),
        "jpg": random_image(root / "c.jpg", 100, 100, seed=3),
        "pdf": write_pdf(root / "doc.pdf", [(200.0, 150.0)] * 3),
        "mp4": encode_video(root / "clip.mp4", frames=8, fps=4, size=(64, 48)),
    }
    (root / "notes.txt").write_text("The meeting is on Tuesday.\n")
    files["txt"] = root / "notes.txt"
    return files


@contextmanager
def local_server(routes: dict, *, slow: dict | None = None, redirects: dict | None = None):
    """A real HTTP server on 127.0.0.1 in a thread, yielding its base URL.

    routes: path -> (status, content type, body, send Content-Length); unknown paths get 404.
    slow: path -> seconds to wait before answering; redirects: path -> Location (302).
    """
    slow, redirects = slow or {}, redirects or {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(slow.get(self.path, 0))
            if self.path in redirects:
                self.send_response(302)
                self.send_header("Location", redirects[self.path])
                self.end_headers()
                return
            status, ctype, body, length = routes.get(self.path, (404, "text/plain", b"nope", True))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
