"""`--backend openai` against a `glmv serve` that is not ready to answer, through real processes: a
full queue (503 queue_full) and a model still loading (503 model_loading) are waited out as the
server's Retry-After asks, saying why, for a bounded time, and Ctrl-C stops the wait at once; a
server that dies in the middle of an answer is reported as a connection lost, not as a server that
cannot be reached."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.cli.conftest import glmv_env, hooked_env, run_glmv
from tests.cli.crafted import ANSWER
from tests.serve.conftest import glmv_server
from tests.serve.test_loading import loading_server


def test_a_full_queue_is_waited_out_as_retry_after_asks(looping, media, tmp_path):
    """One answered at once and one queued: of four questions sent together two get a 503 with
    Retry-After, wait, say why (a progress event), ask again, and all four are answered in order."""
    files = [shutil.copy(media["png"], tmp_path / f"s{k}.png") for k in range(1, 5)]
    env = hooked_env(GLMV_TEST_STEP_DELAY_MS="50")  # (each answer: 30 steps, 1.5 s or more)
    with glmv_server(looping, "--parallel", "1", "--max-queue", "1", log_dir=tmp_path, env=env) as server:
        run = run_glmv("ask", *files, "Sing", "--each", "--parallel", "4", "--jsonl", "--max-new-tokens", "30",
                       "--temperature", "0", "--backend", "openai", "--base-url", server.base_url)
        assert server.health()["served"] == 4
    assert run.code == 0, run.err
    events = [json.loads(line) for line in run.out.splitlines()]
    assert [e["source"] for e in events if e["type"] == "source"] == [str(f) for f in files]
    assert [e["answer"].startswith("la la") for e in events if e["type"] == "done"] == [True] * 4
    waits = [e["message"] for e in events if e["type"] == "progress" and "waiting" in e["message"]]
    assert waits and all(w == "the server is busy (its queue is full); waiting 5 s" for w in waits), waits


def test_a_client_started_with_the_server_waits_for_its_model(scripted, tmp_path):
    """`glmv serve` answers 503 model_loading while its weights load: a client started with it waits,
    with a line that says how far loading has come, and is answered once the model is loaded."""
    server, _ = loading_server(scripted, tmp_path, 6)
    try:
        run = run_glmv("ask", "Where is the blue square?", "--backend", "openai", "--base-url", server.base_url)
    finally:
        server.process.kill()
        server.process.wait(15)
    assert run.code == 0 and run.out == ANSWER + "\n", run.err
    assert "glmv: the server is loading its model (" in run.err and "; waiting" in run.err, run.err


@pytest.fixture(scope="module")
def slow_loading(scripted, tmp_path_factory):
    """A server whose model loads for longer than any test here waits."""
    server, _ = loading_server(scripted, tmp_path_factory.mktemp("loading"), 300)
    yield server
    server.process.kill()
    server.process.wait(15)


def test_ctrl_c_stops_the_wait_at_once(slow_loading):
    client = subprocess.Popen([sys.executable, "-m", "glmv_cli", "ask", "Hi", "--backend", "openai", "--base-url",
                               slow_loading.base_url], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=glmv_env())
    stuck = threading.Timer(60, client.kill)  # (a client that says nothing does not hang the test)
    stuck.start()
    try:
        first = client.stderr.readline().decode()  # (the line that says it waits; an error line before the fix)
        assert first.startswith("glmv: the server is loading its model"), first
        client.send_signal(signal.SIGINT)
        start = time.monotonic()
        assert client.wait(10) == 130
        assert time.monotonic() - start < 3, "Ctrl-C did not stop the wait at once"
    finally:
        stuck.cancel()
        client.kill()
        client.wait()


def test_the_wait_for_a_loading_model_is_bounded(slow_loading, monkeypatch):
    """After its time (minutes by default) the client gives up with the one-line error."""
    from glmv_cli.app import remote
    from glmv_cli.errors import GlmvError

    monkeypatch.setitem(remote.WAIT_S, "model_loading", 2.5)
    start = time.monotonic()
    with pytest.raises(GlmvError, match="is busy .*the model is still loading.*; try again shortly"):
        remote.RemoteSession(slow_loading.base_url)
    assert 2 <= time.monotonic() - start < 6


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_server_that_dies_mid_answer_is_a_lost_connection(looping, tmp_path, how):
    with glmv_server(looping, log_dir=tmp_path) as server:
        client = subprocess.Popen([sys.executable, "-m", "glmv_cli", "ask", "Sing", "--max-new-tokens", "60000",
                                   "--backend", "openai", "--base-url", server.base_url],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=glmv_env())
        try:
            assert client.stdout.read(8) == b"la la la"  # (answering)
            server.process.send_signal(how)
            out, err = client.communicate(timeout=60)
        finally:
            client.kill()
    err = err.decode()
    assert client.returncode == 3, err
    assert "glmv: error: the connection to the server at " + server.base_url in err, err
    assert "was lost while it answered" in err and "cannot be reached" not in err, err
