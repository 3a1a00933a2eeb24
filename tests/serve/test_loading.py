"""`glmv serve` while its model loads: a real server process whose loading a test hook slows
(GLMV_TEST_LOAD_DELAY_S), /health and the official `openai` client while it loads, then after;
and a checkpoint that fails to load ends the server with the one-line error of the command."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import openai
import pytest

from tests.cli.conftest import hooked_env, run_glmv
from tests.cli.crafted import ANSWER
from tests.serve.conftest import Server, free_port


def loading_server(model, tmp_path, seconds: int, *options: str) -> tuple[Server, tuple]:
    """A glmv serve process whose loading takes `seconds` more, once its port answers: (the server,
    its first /health as (status, body, headers))."""
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "glmv_cli", "serve", "--model", str(model), "--port",
                                    str(port), *options], stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env=hooked_env(GLMV_TEST_LOAD_DELAY_S=str(seconds)))
    server, deadline = Server(f"http://127.0.0.1:{port}", port, process, log), time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            return server, server.request("GET", "/health")
        except OSError:
            time.sleep(0.1)
    process.kill()
    pytest.fail(f"glmv serve never answered:\n{log.read_text()}")


def test_the_port_answers_while_the_model_loads_and_serves_once_it_has(scripted, tmp_path):
    server, (status, body, headers) = loading_server(scripted, tmp_path, 8)
    process, log, deadline = server.process, server.log, time.monotonic() + 60
    try:
        assert status == 503, log.read_text()
        assert body["status"] == "loading" and body["model"] == str(scripted) and 0 <= body["fraction"] < 1
        assert int(headers["retry-after"]) >= 1
        with pytest.raises(openai.APIStatusError) as refused:
            server.client().chat.completions.create(  # (max_retries 0)
                model=str(scripted), messages=[{"role": "user", "content": "Where is the blue square?"}])
        assert refused.value.status_code == 503 and refused.value.response.headers["retry-after"].isdigit()
        assert refused.value.body["code"] == "model_loading"
        assert refused.value.body["message"].startswith("the model is still loading (")
        while server.health()["status"] != "ok":
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        answer = server.client().chat.completions.create(
            model=str(scripted), messages=[{"role": "user", "content": "Where is the blue square?"}])
        assert answer.choices[0].message.content == ANSWER
        assert "/health says how far" in log.read_text() and " ready on " in log.read_text()
    finally:
        process.terminate()
        process.wait(15)


def test_while_loading_a_wrong_api_key_is_a_401_and_a_browser_page_passes_cors(scripted, tmp_path):
    """As once the model is loaded: a client with the wrong key learns it now, not after minutes of
    503s; an allowed page's preflight is answered and its 503 carries the CORS header."""
    key, page = "sk-loading", "http://ui.example"
    server, (status, body, _) = loading_server(scripted, tmp_path, 60, "--api-key", key, "--cors-origin", page)
    try:
        assert status == 503 and body["status"] == "loading"  # (/health needs no key, loaded or not)
        with pytest.raises(openai.AuthenticationError) as refused:
            server.client("sk-wrong").models.list()
        assert refused.value.status_code == 401 and refused.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.APIStatusError) as waiting:
            server.client(key).models.list()
        assert waiting.value.status_code == 503 and waiting.value.body["code"] == "model_loading"
        assert server.request("GET", "/v1/models", headers={"Authorization": f"bearer {key}"})[0] == 503  # (any case)
        ask = {"Origin": page, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization"}
        code, _, headers = server.request("OPTIONS", "/v1/chat/completions", headers=ask)
        assert code == 200 and headers["access-control-allow-origin"] == page
        keyed = {"Authorization": f"Bearer {key}"}
        code, _, headers = server.request("GET", "/v1/models", headers={**keyed, "Origin": page})
        assert code == 503 and headers["access-control-allow-origin"] == page
        code, _, headers = server.request("GET", "/v1/models", headers={**keyed, "Origin": "http://evil.example"})
        assert code == 503 and "access-control-allow-origin" not in {k.lower() for k in headers}
    finally:
        server.process.kill()
        server.process.wait(15)


def test_ctrl_c_while_loading_stops_the_server_at_once(scripted, tmp_path):
    """Not once the files are read (a 9B model's minutes): at once, exit code 130."""
    server, (status, _, _) = loading_server(scripted, tmp_path, 60)
    assert status == 503
    server.process.send_signal(signal.SIGINT)
    try:
        assert server.process.wait(10) == 130
    finally:
        server.process.kill()
    assert "serve: stopped while loading" in server.log.read_text()


def test_weights_that_fail_to_load_end_the_server_with_one_line(scripted, tmp_path):
    """The header is whole (the checkpoint opens, the port is taken), the tensors are cut short:
    loading fails in the background, the server stops, the command says why in one line."""
    broken = tmp_path / "broken"
    shutil.copytree(scripted, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    run = run_glmv("serve", "--model", broken, "--port", free_port(), timeout=120)
    assert run.code != 0 and "Traceback" not in run.err, run.err
    errors = [line for line in run.err.splitlines() if line.startswith("glmv: error:")]
    assert len(errors) == 1 and "model.safetensors" in errors[0] and "re-download it" in errors[0], run.err
