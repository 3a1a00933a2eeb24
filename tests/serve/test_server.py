"""`glmv serve` as a real process on 127.0.0.1, driven by the official `openai` client: answers as JSON
and as server-sent events for images, PDFs, videos and multi-turn chats, concurrent clients, bad
input as 4xx (the server keeps serving), stop strings, and the loopback default bind.

The `scripted` checkpoint's greedy output is known whatever the prompt (tests/cli/crafted.py):
the thinking THINKING, then the answer ANSWER (box markers removed) in 10 tokens."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import openai
import pytest

from glmv_cli.app.messages import data_uri
from tests.cli.crafted import ANSWER, RAW, THINKING
from tests.serve.conftest import glmv_server

QUESTION = {"type": "text", "text": "Where is the blue square?"}


@pytest.fixture(scope="module")
def server(scripted, media, tmp_path_factory):
    with glmv_server(scripted, "--allowed-local-media-path", str(media["png"].parent),
                     log_dir=tmp_path_factory.mktemp("logs")) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def image(path: Path, mime: str = "image/png") -> dict:
    return {"type": "image_url", "image_url": {"url": data_uri(path.read_bytes(), mime)}}


def user(*parts) -> list[dict]:
    return [{"role": "user", "content": list(parts)}]


@pytest.fixture(scope="module")
def ask(client):
    """A chat completion from the served model at temperature 0."""
    model = client.models.list().data[0].id

    def ask(messages, **kwargs):
        return client.chat.completions.create(messages=messages, model=model, temperature=0, **kwargs)

    return ask


def test_models_lists_the_checkpoint(client, scripted):
    models = client.models.list().data
    assert [m.id for m in models] == [str(scripted)] and models[0].owned_by == "glmv"


def test_json_answer_with_an_image(ask, media):
    done = ask(user(image(media["png"]), QUESTION))
    message = done.choices[0].message
    assert message.content == ANSWER
    assert message.reasoning == THINKING and message.reasoning_content == THINKING
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.completion_tokens == 10
    assert done.usage.total_tokens == done.usage.prompt_tokens + 10
    assert done.usage.completion_tokens_details.reasoning_tokens == 4  # <think>, two pieces, </think>


def test_streamed_answer_with_an_image(ask, media):
    chunks = list(ask(user(image(media["jpg"], "image/jpeg"), QUESTION), stream=True,
                      stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == ANSWER
    assert "".join(getattr(d, "reasoning", None) or "" for d in deltas) == THINKING
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == THINKING
    assert len([d for d in deltas if d.content]) > 1  # streamed in pieces, not one block
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


def prompt_tokens(ask, *parts) -> int:
    return ask(user(*parts)).usage.prompt_tokens


def test_pdf_and_video_reach_the_prompt(ask, media):
    text_only = prompt_tokens(ask, QUESTION)
    pdf = {"type": "file", "file": {"filename": "doc.pdf",
                                    "file_data": data_uri(media["pdf"].read_bytes(), "application/pdf")}}
    video = {"type": "video_url", "video_url": {"url": data_uri(media["mp4"].read_bytes(), "video/mp4")}}
    with_pdf, with_video = prompt_tokens(ask, pdf, QUESTION), prompt_tokens(ask, video, QUESTION)
    assert with_pdf > text_only + 3 * 4  # three pages, each a few image tokens and its "Page N:" label
    assert with_video > text_only + 4


def test_file_urls_only_below_the_allowed_folder(ask, media, tmp_path):
    allowed = {"type": "image_url", "image_url": {"url": media["png"].as_uri()}}
    assert ask(user(allowed, QUESTION)).choices[0].message.content == ANSWER
    outside = tmp_path / "x.png"
    outside.write_bytes(media["png"].read_bytes())
    with pytest.raises(openai.BadRequestError, match="outside the allowed folder"):
        ask(user({"type": "image_url", "image_url": {"url": outside.as_uri()}}, QUESTION))


def test_history_keeps_the_answers_only(ask, media):
    def history(assistant: str):
        return [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [image(media["png"]), QUESTION]},
                {"role": "assistant", "content": assistant},
                {"role": "user", "content": "And its colour?"}]

    thought = ask(history(f"<think>{'long reasoning ' * 40}</think><answer>{ANSWER}</answer>"))
    plain = ask(history(ANSWER))
    first = ask(user(image(media["png"]), QUESTION))
    assert thought.usage.prompt_tokens == plain.usage.prompt_tokens > first.usage.prompt_tokens
    assert thought.choices[0].message.content == ANSWER


def test_stop_strings_end_the_answer(ask, client):
    """The answer ends before the stop string; generation ends there too, and the usage counts the
    tokens it took (JSON and streamed)."""
    full = ask(user(QUESTION))
    done = ask(user(QUESTION), stop=[" square"])
    assert done.choices[0].message.content == "The blue" and done.choices[0].finish_reason == "stop"
    assert done.usage.prompt_tokens == full.usage.prompt_tokens
    assert 0 < done.usage.completion_tokens < full.usage.completion_tokens
    chunks = list(client.chat.completions.create(messages=user(QUESTION), model="", temperature=0, stop=[" square"],
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The blue"
    assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens


def test_concurrent_clients_are_all_answered(server, media):
    answers, errors = [], []

    def one(k: int):
        try:
            got = server.client().chat.completions.create(messages=user(image(media["png2"]), QUESTION), model="",
                                                          temperature=0, stream=k % 2 == 0)
            answers.append(got.choices[0].message.content if k % 2 else
                           "".join(ch.choices[0].delta.content or "" for ch in got if ch.choices))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and answers == [ANSWER] * 6


BAD = {
    "an unknown model": ({"model": "gpt-9", "messages": user(QUESTION)}, 404, "does not exist"),
    "no messages": ({"messages": []}, 400, "messages"),
    "a bad role": ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
    "an image that does not decode": (
        {"messages": user({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}})},
        400, "image"),
    "an HTML page sent as an image": ({"messages": user({"type": "image_url", "image_url": {
        "url": data_uri(b"<!DOCTYPE html><html>Sign in</html>", "image/png")}})}, 400, "(image/png) holds an HTML"),
    "bad base64": ({"messages": user({"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}})},
                   400, "base64"),
    "an unreadable PDF": ({"messages": user({"type": "file", "file": {
        "file_data": data_uri(b"%PDF-1.7\n garbage", "application/pdf")}})}, 400, "PDF"),
    "a corrupt video": ({"messages": user({"type": "video_url", "video_url": {
        "url": data_uri(b"\x00\x00\x00\x18ftypmp42" + b"\x07" * 500, "video/mp4")}})}, 400, "video"),
    "a prompt over the context": ({"messages": user({"type": "text", "text": "word " * 9000})}, 400, "context"),
    "a bad temperature": ({"messages": user(QUESTION), "temperature": -1}, 400, "temperature"),
    "an unknown part type": ({"messages": user({"type": "audio", "audio": {}})}, 400, "audio"),
    "a schema that is not one": ({"messages": user(QUESTION), "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}}, 400,
        "the JSON schema is not valid: Invalid type: objekt"),
    "a response_format without its schema": ({"messages": user(QUESTION), "response_format": {
        "type": "json_schema"}}, 400, "needs json_schema.schema"),
    "an unknown response_format": ({"messages": user(QUESTION), "response_format": {"type": "yaml"}}, 400,
                                   "not one of text, json_object, json_schema"),
    "a bad regex": ({"messages": user(QUESTION), "structured_outputs": {"regex": "a("}}, 400,
                    "the regular expression is not valid"),
    "two formats at once": ({"messages": user(QUESTION), "response_format": {"type": "json_object"},
                             "guided_choice": ["a"]}, 400, "each set the answer's format"),
    "a prediction without content": ({"messages": user(QUESTION), "prediction": {"type": "content"}}, 400,
                                     "prediction must be"),
    "a malformed http URL": ({"messages": user({"type": "image_url", "image_url": {"url": "http://[::1/a.png"}})},
                             400, "not a valid URL"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_a_4xx_naming_the_problem(server, case):
    body, status, words = BAD[case]
    code, answer, _ = server.request("POST", "/v1/chat/completions", body)
    assert code == status, answer
    assert words.lower() in answer["error"]["message"].lower()
    assert "Traceback" not in answer["error"]["message"]
    assert server.health()["status"] == "ok"


@pytest.mark.parametrize("stream", [False, True])
def test_odd_values_clients_send_are_answered(ask, server, stream):
    """A seed past 64 bits, vLLM's top_k -1 (off), and half of an emoji a JavaScript client cut (a
    lone surrogate: valid JSON, which the openai package itself cannot send)."""
    for extra in ({"seed": 2**64 + 5}, {"seed": -(2**70)}, {"top_k": -1}):
        answer = ask(user(QUESTION), stream=stream, extra_body=extra)
        content = "".join(c.choices[0].delta.content or "" for c in answer if c.choices) if stream else \
            answer.choices[0].message.content
        assert content == ANSWER, extra
    code, body, _ = server.request("POST", "/v1/chat/completions", {"messages": user({
        "type": "text", "text": "hi \ud83d there"}), "stream": stream})
    assert code == 200
    if stream:
        events = [json.loads(line[6:]) for line in body["text"].splitlines() if line.startswith("data: {")]
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")) == ANSWER
    else:
        assert body["choices"][0]["message"]["content"] == ANSWER


def test_an_unexpected_error_is_a_500_and_the_connection_stays_open(scripted, tmp_path):
    """A bug (the test hook's RuntimeError past 30 prompt tokens) is a 500 naming it, and the same
    keep-alive connection answers the next request."""
    import http.client

    from tests.cli.conftest import hooked_env

    with glmv_server(scripted, log_dir=tmp_path, env=hooked_env(GLMV_TEST_FAIL_ABOVE="30")) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        answers = []
        for text in ("Describe it " * 20, "Hi"):
            body = json.dumps({"messages": user({"type": "text", "text": text})})
            connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            got = connection.getresponse()
            answers.append((got.status, json.loads(got.read())))
        (code, failed), (ok, answered) = answers
        assert code == 500 and "a bug the test hook put in" in failed["error"]["message"]
        assert ok == 200 and answered["choices"][0]["message"]["content"] == ANSWER
        assert "Traceback" in server.log.read_text()  # (for whoever runs the server)


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_json_is_a_400_and_the_server_keeps_serving(server, ask, stream):
    code, answer, _ = server.request("POST", "/v1/chat/completions", b'{"messages": [' + (b"1" if stream else b""))
    assert code == 400 and "not valid JSON" in answer["error"]["message"]
    assert ask(user(QUESTION)).choices[0].message.content == ANSWER


def test_bad_input_in_a_stream_is_a_4xx_before_any_event(ask):
    with pytest.raises(openai.BadRequestError, match="not an image"):
        ask(user({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}),
            stream=True)


def test_default_bind_is_loopback(server):
    """The listening socket (in /proc/net/tcp) is 127.0.0.1, not 0.0.0.0."""
    listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[3] == "0A"]
    ours = [addr for addr in listening if int(addr.split(":")[1], 16) == server.port]
    assert ours == ["0100007F:%04X" % server.port]


def test_http_urls_are_fetched_under_the_cli_rules(ask, media):
    from tests.cli.conftest import local_server

    png = media["png"].read_bytes()
    routes = {"/a.png": (200, "image/png", png, True), "/page": (200, "text/html", b"<html></html>", True)}
    with local_server(routes) as base:
        done = ask(user({"type": "image_url", "image_url": {"url": base + "/a.png"}}, QUESTION))
        assert done.choices[0].message.content == ANSWER
        with pytest.raises(openai.BadRequestError, match="web page"):
            ask(user({"type": "image_url", "image_url": {"url": base + "/page"}}, QUESTION))
        with pytest.raises(openai.BadRequestError, match="404"):
            ask(user({"type": "image_url", "image_url": {"url": base + "/missing.png"}}, QUESTION))


def test_think_budget_extra_is_honoured(ask):
    """A budget of 0 closes the thinking at once: no reasoning, the same answer."""
    message = ask(user(QUESTION), extra_body={"think_budget": 0}).choices[0].message
    assert message.content == ANSWER and not message.reasoning


def test_cors_is_off_by_default(server):
    _, _, headers = server.request("GET", "/health", headers={"Origin": "http://evil.example"})
    assert not any(k.lower().startswith("access-control-") for k in headers)


def test_a_second_server_on_the_same_port_is_one_clear_error(server, scripted):
    from tests.cli.conftest import run_glmv

    run = run_glmv("serve", "--model", scripted, "--port", server.port)
    assert run.code == 2 and run.err.startswith("glmv: error: cannot listen on 127.0.0.1:") and \
        run.err.count("\n") == 1


def test_a_follow_up_runs_only_what_it_adds(ask, media):
    """A chat's next request repeats the first one's messages: the server runs only the new ones
    and says how many prompt tokens it reused, as OpenAI's API does; a chat interface's request for
    a title in between (another prompt) does not lose them."""
    first = ask(user(image(media["png"]), QUESTION))
    title = ask([{"role": "system", "content": "You write short titles for chats. " * 4},
                 {"role": "user", "content": "Write a title for a chat that asks where the blue square is."}])
    assert title.usage.prompt_tokens_details.cached_tokens < 10
    follow = ask(user(image(media["png"]), QUESTION) + [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And the red one?"}])
    assert follow.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens
    assert follow.usage.prompt_tokens > first.usage.prompt_tokens
    assert follow.choices[0].message.content == ANSWER


PLACE = {"type": "object", "properties": {"where": {"enum": ["left", "middle", "right"]},
                                          "sure": {"type": "boolean"}}, "required": ["where", "sure"]}


@pytest.mark.parametrize("stream", [False, True])
def test_response_format_keeps_the_answer_to_the_schema(ask, stream):
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": PLACE, "strict": True}}
    if stream:
        deltas = [c.choices[0].delta for c in ask(user(QUESTION), response_format=fmt, stream=True) if c.choices]
        content = "".join(d.content or "" for d in deltas)
        thinking = "".join(getattr(d, "reasoning", None) or "" for d in deltas)
    else:
        message = ask(user(QUESTION), response_format=fmt).choices[0].message
        content, thinking = message.content, message.reasoning
    answer = json.loads(content)
    assert set(answer) == {"where", "sure"} and answer["where"] in PLACE["properties"]["where"]["enum"]
    assert isinstance(answer["sure"], bool)
    assert thinking == THINKING  # the thinking is the script's own: only the answer is held to the format


def test_json_object_choice_and_regex_formats(ask):
    # any object: this script knows no JSON, and its key runs on to max_tokens, but it opens an object
    anything = ask(user(QUESTION), response_format={"type": "json_object"}, max_tokens=16).choices[0]
    assert anything.message.content.startswith('{"') and anything.finish_reason == "length"
    picked = ask(user(QUESTION), extra_body={"guided_choice": ["up", "down"]}).choices[0].message.content
    assert picked in ("up", "down")
    digits = ask(user(QUESTION), extra_body={"structured_outputs": {"regex": "[0-9]{4}"}}).choices[0].message.content
    assert re.fullmatch("[0-9]{4}", digits), digits
    assert ask(user(QUESTION), response_format={"type": "text"}).choices[0].message.content == ANSWER


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_of_the_answers_tokens(ask, server, stream):
    if stream:
        chunks = [c for c in ask(user(QUESTION), logprobs=True, top_logprobs=2, stream=True) if c.choices]
        content = "".join(c.choices[0].delta.content or "" for c in chunks)
        tokens = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    else:
        choice = ask(user(QUESTION), logprobs=True, top_logprobs=2).choices[0]
        content, tokens = choice.message.content, choice.logprobs.content
    assert "".join(t.token for t in tokens) == content == ANSWER
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token and t.logprob <= 0 for t in tokens)
    assert ask(user(QUESTION)).choices[0].logprobs is None  # only when asked
    code, body, _ = server.request("POST", "/v1/chat/completions",
                                   {"messages": user(QUESTION), "logprobs": True, "top_logprobs": 21})
    assert code == 400 and "top_logprobs" in body["error"]["message"]


def test_served_model_names_are_the_id_and_its_aliases(scripted, tmp_path):
    with glmv_server(scripted, "--served-model-name", "glm-4.1v", "--served-model-name", "thinker",
                     log_dir=tmp_path) as s:
        client = s.client()
        assert [m.id for m in client.models.list().data] == ["glm-4.1v"]
        for name in ("glm-4.1v", "thinker", str(scripted)):  # the checkpoint's own name still works
            done = client.chat.completions.create(model=name, messages=user(QUESTION), max_tokens=2)
            assert done.model == "glm-4.1v"
        with pytest.raises(openai.NotFoundError, match="glm-4.1v"):
            client.chat.completions.create(model="gpt-4", messages=user(QUESTION), max_tokens=2)


def test_a_prediction_is_drafted_from_and_changes_nothing(scripted, media, tmp_path):
    """OpenAI's Predicted Outputs: the text the answer is expected to repeat. Its ids are drafted
    and checked with each token (glmv_cli/lookup.py); the answer is the one without it, and the
    usage says how many drafted ids the model drew. (Each request to a server of its own: a server
    drafts from the answers it gave before too.)"""
    messages = user(image(media["png"]), QUESTION)
    # (the scripted model's pieces are single tokens: the prediction needs its tags to line up)
    head, tail = RAW.split("<answer>")
    content = [{"type": "text", "text": head}, {"type": "text", "text": "<answer>" + tail}]
    done = []
    for extra in ({}, {"prediction": {"type": "content", "content": content}}):
        with glmv_server(scripted, log_dir=tmp_path) as server:
            client = server.client()
            model = client.models.list().data[0].id
            done.append(client.chat.completions.create(model=model, messages=messages, temperature=0, **extra))
            time.sleep(0.3)  # (the request's log line)
            logged = server.log.read_text()
    plain, predicted = done
    for d in done:
        assert (d.choices[0].message.content, d.choices[0].message.reasoning) == (ANSWER, THINKING)
    before, after = plain.usage.completion_tokens_details, predicted.usage.completion_tokens_details
    assert after.accepted_prediction_tokens >= 4 > before.accepted_prediction_tokens
    assert predicted.usage.completion_tokens == plain.usage.completion_tokens == 10
    assert f"10 generated ({after.accepted_prediction_tokens} from drafts)" in logged  # (the second server's)
