"""`glmv serve`'s guards, on a real process: the API key (checked before the body is read; also for
GET /v1/models/{id}), the bounded queue (503 + Retry-After), a dropped stream freeing the worker,
and the request body cap. The `looping` checkpoint answers "la la la ..." until max_tokens, so a
generation lasts as long as a test needs."""

from __future__ import annotations

import json
import socket
import threading
import time

import openai
import pytest

from tests.serve.conftest import glmv_server

KEY = "s3cret-key"
LONG = 60000  # tokens: far longer than any test waits
UI = "http://ui.example"


@pytest.fixture(scope="module")
def server(looping, tmp_path_factory):
    with glmv_server(looping, "--api-key", KEY, "--max-queue", "1", "--max-body-mb", "1", "--cors-origin", UI,
                     "--parallel", "1", "--no-request-log",  # (one answered at once; no line per request)
                     log_dir=tmp_path_factory.mktemp("logs")) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return server.client(KEY)


def say(client, max_tokens: int, stream: bool = False):
    return client.chat.completions.create(model=client.models.list().data[0].id, stream=stream, temperature=0,
                                          max_tokens=max_tokens, messages=[{"role": "user", "content": "Sing"}])


def wait_idle(server, seconds: float = 15) -> float:
    """Seconds until /health says the worker is idle with nothing waiting."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        h = server.health()
        if not h["busy"] and not h["waiting"]:
            return time.monotonic() - start
        time.sleep(0.05)
    pytest.fail(f"the worker is still busy after {seconds} s: {server.health()}")


def test_the_api_key_is_enforced(server, client):
    for key in ("", "wrong-key", KEY + "x"):
        with pytest.raises(openai.AuthenticationError, match="API key"):
            server.client(key or "none").models.list()
    code, body, _ = server.request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
    assert code == 401 and "API key" in body["error"]["message"]
    assert server.health()["status"] == "ok"  # /health needs no key
    done = say(client, 6)  # <think>, a thought, </think>, <answer>, then "la", " la"
    assert done.choices[0].message.content == "la la" and done.choices[0].finish_reason == "length"
    assert " POST /v1/" not in server.log.read_text()  # --no-request-log


def test_the_key_is_checked_before_the_body_is_read(server):
    """A wrong or missing key is a 401 whatever the body (not a 400 for its JSON); the scheme's case
    does not matter (RFC 7235); /health stays open."""
    broken = b'{"model": "x", "messages": [oops'
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": KEY}):
        code, body, _ = server.request("POST", "/v1/chat/completions", broken, headers=headers)
        assert code == 401 and body["error"]["code"] == "invalid_api_key", body
    for scheme in ("Bearer", "bearer", "BEARER"):
        code, body, _ = server.request("POST", "/v1/chat/completions", broken,
                                       headers={"Authorization": f"{scheme} {KEY}"})
        assert code == 400 and "not valid JSON" in body["error"]["message"], body
        assert server.request("GET", "/v1/models", headers={"Authorization": f"{scheme} {KEY}"})[0] == 200
    assert server.request("GET", "/health")[0] == 200


def test_a_model_is_retrieved_by_any_name_it_answers_to(server, client, looping):
    """GET /v1/models/{id}: the list's entry, for the id or the checkpoint folder's name (ids hold
    slashes); an OpenAI-style 404 otherwise; the key as for the list."""
    (listed,) = client.models.list().data
    for name in (listed.id, looping.name):
        assert client.models.retrieve(name).model_dump() == listed.model_dump()
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert missing.value.body["code"] == "model_not_found" and "gpt-9" in missing.value.body["message"]
    with pytest.raises(openai.AuthenticationError):
        server.client("wrong-key").models.retrieve(listed.id)


def test_a_dropped_stream_frees_the_worker(server, client):
    stream = say(client, LONG, stream=True)
    got = ""
    for chunk in stream:
        got += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        if got.count("la") >= 5:
            break
    assert server.health()["busy"]
    stream.close()
    wait_idle(server)
    assert say(client, 5).choices[0].message.content == "la"


def test_a_client_that_stops_waiting_for_json_frees_the_worker(server, client):
    impatient = client.with_options(timeout=1.5)
    with pytest.raises(openai.APITimeoutError):
        say(impatient, LONG)
    assert wait_idle(server) < 5
    assert say(client, 5).choices[0].message.content == "la"


def test_a_full_queue_answers_503_with_retry_after(server, client):
    running = say(client, LONG, stream=True)
    next(iter(running))  # the worker has it
    waiting: list = []
    t = threading.Thread(target=lambda: waiting.append(say(client, 5)))
    t.start()
    deadline = time.monotonic() + 10
    while server.health()["waiting"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(openai.APIStatusError) as refused:
        say(client, 5)
    assert refused.value.status_code == 503 and refused.value.response.headers["retry-after"].isdigit()
    assert "queue is full" in refused.value.message
    running.close()
    t.join(60)
    assert waiting[0].choices[0].message.content == "la"
    wait_idle(server)


def test_a_client_that_leaves_the_queue_gives_its_place_back_at_once(server, client):
    """Not once the running request ends: a third client finds the place free while it runs."""
    running = say(client, LONG, stream=True)
    next(iter(running))
    with pytest.raises(openai.APITimeoutError):
        say(client.with_options(timeout=1), 5)  # waits, gives up
    deadline = time.monotonic() + 10
    while server.health()["waiting"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.health()["waiting"] == 0 and server.health()["busy"]
    third: list = []
    t = threading.Thread(target=lambda: third.append(say(client, 5)))
    t.start()  # (queued, not a 503)
    deadline = time.monotonic() + 10
    while server.health()["waiting"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    running.close()
    t.join(60)
    assert third[0].choices[0].message.content == "la"
    wait_idle(server)


def test_n_answers_fit_what_runs_and_waits_together_and_more_is_a_400(server, client):
    """--parallel 1 and --max-queue 1: an idle server gives two answers at once; three never fit."""
    two = client.chat.completions.create(model=client.models.list().data[0].id, n=2, temperature=0, max_tokens=5,
                                         messages=[{"role": "user", "content": "Sing"}])
    assert [c.message.content for c in two.choices] == ["la", "la"]
    with pytest.raises(openai.BadRequestError, match="ask for n <= 2"):
        client.chat.completions.create(model=client.models.list().data[0].id, n=3, max_tokens=5,
                                       messages=[{"role": "user", "content": "Sing"}])
    wait_idle(server)


def test_a_body_over_the_cap_is_a_413_before_it_is_read(server):
    """Only the headers are sent: the server answers 413 from Content-Length alone."""
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {2 * 2**20}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head.encode())
        answer = s.makefile("rb").read().decode()
    status, _, body = answer.partition("\r\n\r\n")
    assert status.startswith("HTTP/1.1 413") and "MiB" in json.loads(body)["error"]["message"]
    assert server.health()["status"] == "ok"


def test_cors_only_for_the_allowed_origin(server):
    ask = {"Origin": UI, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    code, _, headers = server.request("OPTIONS", "/v1/chat/completions", headers=ask)
    assert code == 200 and headers["access-control-allow-origin"] == UI
    code, _, headers = server.request("OPTIONS", "/v1/chat/completions",
                                      headers={**ask, "Origin": "http://evil.example"})
    assert code == 400 and "access-control-allow-origin" not in {k.lower() for k in headers}


def test_a_request_that_runs_out_of_memory_is_a_400_and_the_server_keeps_serving(scripted, media, tmp_path):
    """Under the test hook (tests/oom_hook) a prompt over 30 tokens fails as CUDA's allocator does:
    that request gets a 400 saying what to send less of, and the next one is answered."""
    from glmv_cli.app.messages import data_uri
    from tests.cli.conftest import hooked_env

    env = hooked_env(GLMV_TEST_OOM_ABOVE="30")
    with glmv_server(scripted, log_dir=tmp_path, env=env) as server:
        client = server.client()
        model = client.models.list().data[0].id
        picture = {"type": "image_url", "image_url": {"url": data_uri(media["png"].read_bytes(), "image/png")}}
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError, match="out of memory on cpu reading a .* send less"):
                client.chat.completions.create(model=model, stream=stream, messages=[
                    {"role": "user", "content": [picture, {"type": "text", "text": "Describe it " * 20}]}])
        answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])
        assert answer.choices[0].message.content and server.health()["status"] == "ok"
