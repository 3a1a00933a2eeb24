"""A real `glmv serve` process on 127.0.0.1 (free port) for the server tests, and the checkpoints and
media of the CLI tests (the same fixtures, imported)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.conftest import glmv_env, looping, media, scripted, tiny, tool_random, tool_scripted  # noqa: F401

START_TIMEOUT = 90


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def health(self) -> dict:
        return self.request("GET", "/health")[1]

    def request(self, method: str, path: str, body: bytes | dict | None = None,
                headers: dict | None = None) -> tuple[int, dict, dict]:
        """(status, JSON body, headers) of a raw HTTP request (for what the openai client cannot send)."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, _json(r.read()), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, _json(e.read()), dict(e.headers)

    def client(self, api_key: str = "none", **kwargs):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=60, **kwargs)


def _json(body: bytes) -> dict:
    """A JSON body, or {"text": ...} for anything else (a CORS preflight answers plain text)."""
    try:
        return json.loads(body)
    except ValueError:
        return {"text": body.decode("utf-8", "replace")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def glmv_server(model: Path, *args: str, log_dir: Path, env: dict | None = None):
    """`glmv serve --model MODEL --port FREE ARGS...` until the block ends; waits for /health.
    `env`: the server's environment (default: glmv_env())."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "glmv_cli", "serve", "--model", str(model), "--port",
                                    str(port), *args], stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env=env or glmv_env())
    server = Server(f"http://127.0.0.1:{port}", port, process, log)
    try:
        _wait(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"glmv serve exited with {server.process.returncode}:\n{server.log.read_text()}")
        try:
            if server.health()["status"] == "ok":
                return
        except OSError:
            pass
        time.sleep(0.2)  # (not listening yet, or still loading: /health's 503)
    pytest.fail(f"glmv serve did not answer /health within {START_TIMEOUT} s:\n{server.log.read_text()}")
