"""`glmv serve --parallel N` on a real process, driven by the `openai` client from several threads:
requests sent together are answered together (their tokens decoded in shared steps), each with
exactly the answer it gets alone; N run at once, the queue holds the rest."""

from __future__ import annotations

import threading
import time

import openai
import pytest

from glmv_cli.app.messages import data_uri
from tests.cli.conftest import hooked_env
from tests.serve.conftest import glmv_server


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    env = hooked_env(GLMV_TEST_STEP_DELAY_MS="10")  # (decoding outlasts reading a request's attachments)
    with glmv_server(tiny, "--parallel", "3", "--dtype", "float32", log_dir=tmp_path_factory.mktemp("logs"),
                     env=env) as s:
        yield s


def requests(media) -> list[dict]:
    """Six different requests: text, images, a PDF, a video; greedy and seeded sampling; JSON and streamed."""
    def image(key, mime="image/png"):
        return {"type": "image_url", "image_url": {"url": data_uri(media[key].read_bytes(), mime)}}

    def user(*parts):
        return [{"role": "user", "content": [*parts, {"type": "text", "text": "What is this?"}]}]

    pdf = {"type": "file", "file": {"file_data": data_uri(media["pdf"].read_bytes(), "application/pdf"),
                                    "filename": "doc.pdf"}}
    video = {"type": "video_url", "video_url": {"url": data_uri(media["mp4"].read_bytes(), "video/mp4")}}
    return [
        dict(messages=[{"role": "user", "content": "Write a haiku about the sea."}], max_tokens=30),
        dict(messages=user(image("png")), max_tokens=22, stream=True),
        dict(messages=user(image("jpg", "image/jpeg"), image("png2")), max_tokens=26, temperature=1.0, seed=7),
        dict(messages=user(pdf), max_tokens=18),
        dict(messages=user(video), max_tokens=24, stream=True),
        dict(messages=[{"role": "system", "content": "Be brief."},
                       {"role": "user", "content": "Count to ten."}], max_tokens=33, temperature=0.8, seed=3),
    ]


def answer(client, request: dict) -> tuple:
    """(reasoning, content, finish reason, completion tokens) of one request."""
    request = {"model": client.models.list().data[0].id, "temperature": 0, **request}
    if request.get("stream"):
        chunks = list(client.chat.completions.create(**request, stream_options={"include_usage": True}))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        return ("".join(getattr(d, "reasoning", None) or "" for d in deltas),
                "".join(d.content or "" for d in deltas), finish, chunks[-1].usage.completion_tokens)
    done = client.chat.completions.create(**request)
    c = done.choices[0]
    return getattr(c.message, "reasoning", None) or "", c.message.content or "", c.finish_reason, \
        done.usage.completion_tokens


def test_requests_sent_together_get_the_answers_they_get_alone(server, media):
    client = server.client()
    todo = requests(media)
    alone = [answer(client, r) for r in todo]
    assert len({a[1] for a in alone}) > 1  # (different requests, different answers)
    before = server.health()["decode_steps"]
    together, errors = [None] * len(todo), []
    start = threading.Barrier(len(todo))

    def send(i):
        try:
            start.wait()
            together[i] = answer(server.client(), todo[i])
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(todo))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert together == alone
    health = server.health()
    after = health["decode_steps"]
    assert health["parallel"] == 3
    assert after["widest"] == 3  # decoded together, never more than --parallel at once
    steps, rows = after["steps"] - (before or {}).get("steps", 0), after["rows"] - (before or {}).get("rows", 0)
    assert rows / steps > 1.5
    assert health["served"] >= 2 * len(todo) and not health["busy"]


@pytest.fixture(scope="module")
def singing(looping, tmp_path_factory):
    with glmv_server(looping, "--parallel", "2", "--max-queue", "1", log_dir=tmp_path_factory.mktemp("logs")) as s:
        yield s


def test_parallel_requests_run_at_once_and_the_queue_holds_the_rest(singing):
    client = singing.client()
    model = client.models.list().data[0].id

    def sing(max_tokens, stream=False):
        return client.chat.completions.create(model=model, stream=stream, temperature=0, max_tokens=max_tokens,
                                              messages=[{"role": "user", "content": "Sing"}])

    first, second = sing(60000, stream=True), sing(60000, stream=True)
    next(iter(first)), next(iter(second))  # both are being answered
    health = singing.health()
    assert health["running"] == 2 and health["waiting"] == 0
    waiting: list = []
    t = threading.Thread(target=lambda: waiting.append(sing(5)))
    t.start()
    deadline = time.monotonic() + 10
    while singing.health()["waiting"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(openai.APIStatusError) as refused:  # two running, one waiting: full
        sing(5)
    assert refused.value.status_code == 503
    first.close()  # a place frees: the waiting request is answered while the other still sings
    t.join(60)
    assert waiting[0].choices[0].message.content == "la"
    assert singing.health()["running"] == 1
    second.close()


def test_n_choices_are_generated_together_each_as_its_own_request(server, media):
    """n: 3 choices of one prompt, decoded together; with a seed, choice i is what a request with
    seed + i gets alone. JSON and streamed (chunks interleaved, each with its index) agree; the
    usage counts the prompt once and every choice's tokens."""
    client = server.client()
    model = client.models.list().data[0].id
    messages = requests(media)[1]["messages"]
    ask = dict(model=model, messages=messages, max_tokens=20, temperature=1.0)
    alone = [client.chat.completions.create(**ask, seed=7 + i).choices[0].message for i in range(3)]
    done = client.chat.completions.create(**ask, seed=7, n=3)
    assert [c.index for c in done.choices] == [0, 1, 2]
    assert [(c.message.content, c.message.reasoning) for c in done.choices] == [
        (m.content, getattr(m, "reasoning", None)) for m in alone]
    assert len({c.message.content for c in done.choices}) > 1  # (sampled: different choices)
    singles = [client.chat.completions.create(**ask, seed=7 + i).usage for i in range(3)]
    assert done.usage.prompt_tokens == singles[0].prompt_tokens
    assert done.usage.completion_tokens == sum(u.completion_tokens for u in singles)
    chunks = list(client.chat.completions.create(**ask, seed=7, n=3, stream=True,
                                                 stream_options={"include_usage": True}))
    streamed = {i: ["", ""] for i in range(3)}
    finishes = {}
    for c in chunks:
        for ch in c.choices:
            streamed[ch.index][0] += ch.delta.content or ""
            streamed[ch.index][1] += getattr(ch.delta, "reasoning", None) or ""
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
    assert [tuple(streamed[i]) for i in range(3)] == [(c.message.content or "", c.message.reasoning or "")
                                                      for c in done.choices]
    assert finishes == {i: c.finish_reason for i, c in enumerate(done.choices)}
    assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(**ask, n=9)
    assert server.health()["status"] == "ok"


def test_each_answered_request_gets_a_line_in_the_servers_log(server, media):
    """The request log: status, route, prompt tokens (cached ones), tokens generated (every choice),
    first token and speed; an error's line carries the message the client got."""
    import re

    client = server.client()
    model = client.models.list().data[0].id
    messages = requests(media)[0]["messages"]
    done = client.chat.completions.create(model=model, messages=messages, max_tokens=9, temperature=0)
    list(client.chat.completions.create(model=model, messages=messages, max_tokens=7, temperature=0, n=2,
                                        stream=True))
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    client.responses.create(model=model, input="Hello", max_output_tokens=5)
    time.sleep(0.5)
    lines = [line for line in server.log.read_text().splitlines() if re.match(r"glmv: \d\d:\d\d:\d\d \d{3} ", line)]
    n = done.usage.prompt_tokens
    json_line = (rf"200 POST /v1/chat/completions: {n:,} prompt tokens( \(\d+ cached\))?, 9 generated"
                 rf"( \(\d+ from drafts\))?, first token")
    assert any(re.search(json_line, line) for line in lines), lines[-6:]
    assert any(re.search(r"200 POST /v1/chat/completions: .*, 14 generated( \(\d+ from drafts\))? in 2 choices, "
                         r"first token [\d.]+ s, [\d.]+ s, [\d.]+ tokens/s$", line) for line in lines), lines[-6:]
    assert any(line.endswith("400 POST /v1/chat/completions: " + bad.value.body["message"]) for line in lines)
    assert any(re.search(r"200 POST /v1/responses: .*, 5 generated", line) for line in lines), lines[-6:]
    assert not any("/health" in line for line in lines)


def test_max_context_bounds_every_request(looping, tmp_path_factory):
    """--max-context (vLLM's --max-model-len): /v1/models says it, a request asking for more is a 400,
    one without max_tokens gets what the context leaves (each request's KV cache stays bounded)."""
    with glmv_server(looping, "--max-context", "300", log_dir=tmp_path_factory.mktemp("logs")) as s:
        client = s.client()
        model = client.models.list().data[0]
        assert model.model_extra["max_model_len"] == 300
        ask = dict(model=model.id, messages=[{"role": "user", "content": "Sing"}], temperature=0)
        with pytest.raises(openai.BadRequestError, match="context"):
            client.chat.completions.create(**ask, max_tokens=400)
        done = client.chat.completions.create(**ask)
        assert done.choices[0].finish_reason == "length"
        assert done.usage.prompt_tokens + done.usage.completion_tokens == 300
