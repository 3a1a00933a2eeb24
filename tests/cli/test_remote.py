"""`--backend openai` against a real `glmv serve` process: the same answer, thinking and --json as a
local run at temperature 0 (images, PDFs, videos, chat), thinking and answer streamed apart, the
environment variables, and server errors as one line with the local exit codes. The tag parsing
for servers without reasoning fields (vLLM, SGLang) is checked on the openai client's own chunk
type."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from openai.types.chat import ChatCompletionChunk
from PIL import Image

from glmv_cli.app import attachments as att
from glmv_cli.app.answer_format import AnswerFormat
from glmv_cli.app.loaders import LoadOptions
from glmv_cli.app.messages import content_parts, data_uri
from glmv_cli.app.remote import Reply
from glmv_cli.inputs.image import open_image
from glmv_cli.stream import Answer, Thinking
from tests.cli.conftest import glmv_env, run_glmv
from tests.cli.crafted import ANSWER, THINKING
from tests.serve.conftest import glmv_server

KEY = "remote-key"
GREEDY = ("--temperature", "0", "--max-new-tokens", "24")


def exact(**extra: str) -> dict[str, str]:
    """The environment of a tiny-checkpoint run compared token for token with another: no drafts
    (lookup.py). A step that checks drafts may differ from a one-token step in the last bits, and
    whether drafts are checked follows the steps' timing: on a random checkpoint's flat logits that
    can flip a near tie between a local run and the server's (seen once under load)."""
    return glmv_env(GLMV_SPECULATE="0", **extra)


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    with glmv_server(tiny, "--api-key", KEY, log_dir=tmp_path_factory.mktemp("logs"), env=exact()) as s:
        yield s


@pytest.fixture(scope="module")
def scripted_server(scripted, tmp_path_factory):
    with glmv_server(scripted, log_dir=tmp_path_factory.mktemp("logs")) as s:
        yield s


def remote(server, key: str = KEY) -> tuple[str, ...]:
    return "--backend", "openai", "--base-url", server.base_url, "--api-key", key


SAME = ("thinking", "answer", "finish_reason")


def untagged(raw: str) -> str:
    """The generated text without GLM's tag tokens: a server sends its content without the stray ones a
    random checkpoint can write where no tag belongs (a `</think>` in the answer), so a client can only
    rebuild the tags that frame the thinking and the answer."""
    return re.sub(r"</?(think|answer)>", "", raw)


@pytest.mark.parametrize("command, kind", [("ask", "png"), ("pdf", "pdf"), ("video", "mp4")])
def test_the_same_answer_as_a_local_run(server, tiny, media, command, kind):
    args = (command, media[kind], "What is shown?", *GREEDY)
    local, far = run_glmv(*args, "--model", tiny, "--json", env=exact()), run_glmv(*args, *remote(server), "--json")
    assert local.code == far.code == 0, local.err + far.err
    assert {k: far.json[k] for k in SAME} == {k: local.json[k] for k in SAME}
    assert untagged(far.json["raw"]) == untagged(local.json["raw"])
    for k in ("prompt_tokens", "completion_tokens", "reasoning_tokens"):  # (the server's counts, read back)
        assert far.json["usage"][k] == local.json["usage"][k]
    assert far.json["model"] == str(tiny)
    plain = run_glmv(*args, *remote(server))
    assert plain.code == 0 and plain.out == (local.json["answer"] + "\n" if local.json["answer"] else "")


def test_each_parallel_sends_the_questions_at_once_and_answers_as_locally(server, tiny, media):
    """--each --parallel 3 over the server: three requests at once (for it to decode together), the
    answers those of --each run locally one after another, in order."""
    files = (media["png"], media["jpg"], media["png2"])
    args = ("ask", *files, "What is shown?", *GREEDY, "--each", "--json")
    local = run_glmv(*args, "--model", tiny, env=exact(GLMV_NO_HISTORY="1"))
    served = server.health()["served"]
    far = run_glmv(*args, "--parallel", "3", *remote(server))
    assert local.code == far.code == 0, local.err + far.err
    mine = [json.loads(line) for line in local.out.splitlines()]
    theirs = [json.loads(line) for line in far.out.splitlines()]
    assert [(d["source"], d["raw"]) for d in theirs] == [(d["source"], d["raw"]) for d in mine]
    assert server.health()["served"] >= served + 3  # (whether they overlapped there is the server's timing)


def test_thinking_and_answer_stream_apart_as_locally(scripted_server, scripted, media):
    args = ("ask", media["png"], "Where is the blue square?", "--backend", "openai", "--base-url",
            scripted_server.base_url)
    run, as_json = run_glmv(*args), run_glmv(*args, "--json")
    local = run_glmv("ask", media["png"], "Where is the blue square?", "--model", scripted, "--json")
    assert run.code == 0 and run.out == ANSWER + "\n"
    assert THINKING in run.err and ANSWER not in run.err
    assert as_json.json["thinking"] == THINKING and as_json.json["answer"] == ANSWER
    assert as_json.json["boxes"] == local.json["boxes"]  # boxes mapped onto the same image pixels


def test_stop_strings_reach_the_server(scripted_server):
    """GenerationOptions.stop through the remote backend: the server ends the answer before it and
    counts the tokens decoded, as a local Session does."""
    from glmv_cli.app.remote import RemoteSession
    from glmv_cli.app.session import GenerationOptions

    far = RemoteSession(scripted_server.base_url)
    full = far.run("Where is it?", generation=GenerationOptions(temperature=0))
    cut = far.run("Where is it?", generation=GenerationOptions(temperature=0, stop=(" square",)))
    assert (cut.answer, cut.finish_reason) == ("The blue", "stop")
    assert 0 < cut.usage.completion_tokens < full.usage.completion_tokens


def test_chat_keeps_the_same_history_as_locally(server, tiny):
    lines = "Hello there\nAnd then?\n"
    local = run_glmv("chat", "--model", tiny, *GREEDY, input=lines, env=exact())
    far = run_glmv("chat", *remote(server), *GREEDY, input=lines)
    assert local.code == far.code == 0, local.err + far.err
    assert far.out == local.out and far.out.count("\n") >= 2


def test_continuing_over_the_server_is_one_remote_conversation(scripted_server, media, tmp_path):
    """`ask -c` with --backend openai sends the kept turns as messages (the answer without its
    reasoning, the image again, the new one after): the server reads what one RemoteConversation
    of the Python API sends, token for token."""
    from glmv_cli.app.remote import RemoteSession
    from glmv_cli.app.session import GenerationOptions

    flags = ("--backend", "openai", "--base-url", scripted_server.base_url, "--temperature", "0", "--json")
    env = glmv_env(XDG_STATE_HOME=str(tmp_path / "state"))
    first = run_glmv("ask", media["png"], "What is shown?", *flags, env=env)
    follow = run_glmv("ask", "-c", media["jpg"], "And this one?", *flags, env=env)
    assert first.code == follow.code == 0, first.err + follow.err
    chat = RemoteSession(scripted_server.base_url).conversation()
    gen = GenerationOptions(temperature=0)
    want = [chat.run("What is shown?", [media["png"]], generation=gen),
            chat.run("And this one?", [media["jpg"]], generation=gen)]
    assert [first.json["usage"]["prompt_tokens"], follow.json["usage"]["prompt_tokens"]] == \
        [w.usage.prompt_tokens for w in want]
    assert want[1].usage.prompt_tokens > 2 * want[0].usage.prompt_tokens  # the first turn went again
    assert follow.json["answer"] == ANSWER


def test_base_url_and_key_from_the_environment(server, tiny):
    env = glmv_env(GLMV_BACKEND="openai", GLMV_BASE_URL=server.base_url, GLMV_API_KEY=KEY)
    far = run_glmv("ask", "Say something", *GREEDY, "--json", env=env)
    local = run_glmv("ask", "Say something", *GREEDY, "--json", "--model", tiny, env=exact())
    assert far.code == 0, far.err
    assert far.json["raw"] == local.json["raw"]


def test_server_errors_are_one_line_with_local_exit_codes(server, free_url):
    cases = [
        (run_glmv("ask", "hi", *remote(server, "wrong")), 2, "api-key"),
        (run_glmv("ask", "hi", *remote(server), "--remote-model", "nope"), 3, "no model 'nope'"),
        (run_glmv("ask", "word " * 9000, *remote(server)), 2, "context"),
        (run_glmv("ask", "hi", "--backend", "openai", "--base-url", free_url), 3, "cannot be reached"),
        (run_glmv("ask", "hi", "--backend", "openai"), 2, "--base-url"),
    ]
    for run, code, words in cases:
        assert run.code == code, run.err
        assert run.err.startswith("glmv: error: ") and run.err.count("\n") == 1 and words in run.err, run.err


def test_images_a_server_may_not_decode_are_sent_as_the_png_a_local_run_sees(media, tmp_path):
    """vLLM and SGLang open images with a plain Pillow: no SVG, no HEIC. Those go as PNGs of what
    glmv itself decodes; the usual formats go as they are."""
    import pillow_heif

    from tests.inputs.test_svg import DIAGRAM

    heic = tmp_path / "photo.heic"
    pillow_heif.from_pillow(Image.new("RGB", (40, 20), (0, 0, 255))).save(heic)
    for attachment in (att.from_bytes(DIAGRAM, name="d.svg"), att.from_path(heic)):
        (part,) = content_parts(attachment, LoadOptions())
        header, payload = part["image_url"]["url"].split(",", 1)
        assert header == "data:image/png;base64"
        sent = Image.open(io.BytesIO(base64.b64decode(payload)))  # a plain Pillow reads it
        local = open_image(attachment.read_bytes())
        assert sent.size == local.size and np.array_equal(np.asarray(sent), np.asarray(local.convert("RGB")))
    (part,) = content_parts(att.from_path(media["jpg"]), LoadOptions())
    assert part["image_url"]["url"] == data_uri(media["jpg"].read_bytes(), "image/jpeg")


@pytest.fixture
def free_url():
    from tests.serve.conftest import free_port

    return f"http://127.0.0.1:{free_port()}/v1"


def chunk(content=None, **delta) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate({
        "id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content, **delta}, "finish_reason": None}]})


def test_tags_in_the_content_are_parsed_when_no_reasoning_field_comes():
    """vLLM without a reasoning parser (skip_special_tokens false): GLM's tags in the content."""
    reply = Reply()
    pieces = ["<think>\nLet me", " look.</th", "ink><answer>It is ", "<|begin_of_box|>red<|end_of_box|>", "</answer>"]
    events = [e for p in pieces for e in reply._chunk(chunk(p))]
    assert "".join(e.text for e in events if isinstance(e, Thinking)) == "Let me look."
    assert "".join(e.text for e in events if isinstance(e, Answer)) == "It is red"
    assert reply.thinking == "Let me look."


def test_reasoning_content_is_read_when_reasoning_is_absent():
    reply = Reply()
    events = [*reply._chunk(chunk(reasoning_content="\nHmm, blue.")), *reply._chunk(chunk("Blue."))]
    assert [type(e) for e in events] == [Thinking, Answer] and reply.thinking == "Hmm, blue."


@pytest.mark.parametrize("server, body, dropped", [
    ("vllm", {"skip_special_tokens": False, "top_k": 5, "repetition_penalty": 1.1}, "--think-budget"),
    ("glmv", {"top_k": 5, "repetition_penalty": 1.1, "think_budget": 64}, None),
    ("openai", {}, "--top-k, --repetition-penalty, --think-budget"),
])
def test_server_specific_fields_only_where_the_server_takes_them(server, body, dropped):
    from glmv_cli.app.remote import RemoteSession
    from glmv_cli.app.session import GenerationOptions

    session = RemoteSession.__new__(RemoteSession)  # no network: only the server kind matters here
    session.server = server
    extras, notes = session.request_extras(GenerationOptions(top_k=5, repetition_penalty=1.1, think_budget=64))
    assert extras == body
    assert (notes == []) if dropped is None else (dropped in notes[0])


CHOICE = AnswerFormat.choice(["a.b", "c"])
JSON = AnswerFormat.json_schema({"type": "object", "properties": {"n": {"type": "integer"}}})
SENT_JSON = {"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": JSON.schema}}}


@pytest.mark.parametrize("server, fmt, body, dropped", [
    ("glmv", JSON, SENT_JSON, None),
    ("openai", JSON, SENT_JSON, None),
    ("vllm", JSON, {"skip_special_tokens": False, **SENT_JSON}, None),
    ("glmv", CHOICE, {"structured_outputs": {"choice": ["a.b", "c"]}}, None),
    ("vllm", AnswerFormat.regex("[0-9]+"), {"skip_special_tokens": False, "structured_outputs": {"regex": "[0-9]+"}},
     None),
    ("sglang", CHOICE, {"skip_special_tokens": False, "regex": r"a\.b|c"}, None),
    ("sglang", AnswerFormat.grammar('root ::= "x"'), {"skip_special_tokens": False, "ebnf": 'root ::= "x"'}, None),
    ("openai", CHOICE, {}, "--choice"),
])
def test_answer_formats_go_in_the_field_each_server_reads(server, fmt, body, dropped):
    from glmv_cli.app.remote import RemoteSession
    from glmv_cli.app.session import GenerationOptions

    session = RemoteSession.__new__(RemoteSession)
    session.server = server
    extras, notes = session.request_extras(GenerationOptions(format=fmt))
    assert extras == body
    assert (notes == []) if dropped is None else (dropped in notes[0])



@pytest.mark.parametrize("server, sent", [("glmv", True), ("vllm", True), ("sglang", True), ("openai", False)])
def test_no_think_goes_as_chat_template_kwargs_where_the_server_takes_them(server, sent):
    from glmv_cli.app.remote import RemoteSession
    from glmv_cli.commands import generation_options

    session = RemoteSession.__new__(RemoteSession)
    session.server = server
    extras, notes = session.request_extras(generation_options(no_think=True))
    assert extras.get("chat_template_kwargs") == ({"enable_thinking": False} if sent else None)
    assert (notes == []) if sent else ("--no-think" in notes[0])


def test_no_think_over_the_server_answers_as_locally(scripted_server, scripted):
    args = ("ask", "Where is it?", "--no-think", "--json", "--temperature", "0")
    local, far = run_glmv(*args, "--model", scripted), run_glmv(*args, *remote(scripted_server, "none"))
    assert local.code == far.code == 0, local.err + far.err
    assert (far.json["thinking"], far.json["answer"]) == (local.json["thinking"], local.json["answer"]) == ("", ANSWER)


def test_logprobs_over_the_server_are_the_local_ones(scripted_server, scripted):
    args = ("ask", "Where is it?", "--logprobs", "2", "--json", "--temperature", "0")
    local, far = run_glmv(*args, "--model", scripted), run_glmv(*args, *remote(scripted_server, "none"))
    assert local.code == far.code == 0, local.err + far.err
    tokens = [t["token"] for t in far.json["logprobs"]]
    assert tokens == [t["token"] for t in local.json["logprobs"]] and "".join(tokens) == ANSWER
    assert [x["logprob"] for x in far.json["logprobs"]] == pytest.approx([x["logprob"] for x in local.json["logprobs"]])

def test_a_schema_answers_as_locally(scripted_server, scripted, tmp_path):
    schema = tmp_path / "place.json"
    schema.write_text('{"type": "object", "properties": {"where": {"enum": ["left", "right"]}}, "required": ["where"]}')
    args = ("ask", "Where is it?", "--schema", schema, "--json", "--temperature", "0")
    local, far = run_glmv(*args, "--model", scripted), run_glmv(*args, *remote(scripted_server, "none"))
    assert local.code == far.code == 0, local.err + far.err
    same = ("thinking", "answer", "finish_reason")  # (the server's content is the answer: no tags in `raw`)
    assert {k: far.json[k] for k in same} == {k: local.json[k] for k in same}
    assert json.loads(far.json["answer"])["where"] in ("left", "right") and far.json["thinking"] == THINKING
