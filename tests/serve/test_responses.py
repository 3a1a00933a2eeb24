"""OpenAI's Responses API on `glmv serve` (a real process), driven by the official `openai` client:
`responses.create` (JSON and streamed events), the client's `responses.stream` and `responses.parse`
helpers, input items with images, instructions, max_output_tokens, reasoning effort, and bad requests
as 400s. Tool calls through it are in test_tools.py.

The `scripted` checkpoint thinks THINKING (4 tokens with the tags) and answers ANSWER, whatever the prompt."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel

from glmv_cli.app.messages import data_uri
from tests.cli.crafted import ANSWER, THINKING
from tests.serve.conftest import glmv_server
from tests.serve.test_server import image

QUESTION = "Where is the blue square?"


@pytest.fixture(scope="module")
def server(scripted, tmp_path_factory):
    with glmv_server(scripted, log_dir=tmp_path_factory.mktemp("logs")) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def create(client):
    model = client.models.list().data[0].id

    def create(input, **kwargs):
        return client.responses.create(model=model, input=input, temperature=0, **kwargs)

    return create


def test_a_response_holds_the_reasoning_and_the_answer(create):
    r = create(QUESTION)
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert r.output[0].content[0].text == THINKING
    assert r.output_text == ANSWER and r.output[1].role == "assistant"
    assert (r.usage.output_tokens, r.usage.output_tokens_details.reasoning_tokens) == (10, 4)
    assert r.usage.total_tokens == r.usage.input_tokens + 10


def test_streamed_events_in_order_with_their_sequence_numbers(create):
    events = list(create(QUESTION, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed" and [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == THINKING
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == ANSWER
    final = events[-1].response
    assert final.output_text == ANSWER and final.id == events[0].response.id


def test_the_clients_stream_and_parse_helpers(client):
    model = client.models.list().data[0].id
    with client.responses.stream(model=model, input=QUESTION, temperature=0) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == ANSWER

    class Place(BaseModel):
        where: Literal["left", "right"]

    parsed = client.responses.parse(model=model, input=QUESTION, temperature=0, text_format=Place).output_parsed
    assert parsed.where in ("left", "right")


def test_input_items_with_an_image_a_pdf_and_instructions(create, media):
    url = image(media["png"])["image_url"]["url"]
    plain = create(QUESTION).usage.input_tokens
    with_image = create([{"role": "user", "content": [{"type": "input_image", "image_url": url},
                                                      {"type": "input_text", "text": QUESTION}]}])
    assert with_image.output_text == ANSWER and with_image.usage.input_tokens > plain + 4
    told = create(QUESTION, instructions="Answer in one word.")
    assert told.usage.input_tokens > plain  # the instructions are the system message
    pdf = data_uri(media["pdf"].read_bytes(), "application/pdf")
    with_pdf = create([{"role": "user", "content": [{"type": "input_file", "file_data": pdf, "filename": "doc.pdf"},
                                                    {"type": "input_text", "text": QUESTION}]}])
    assert with_pdf.output_text == ANSWER and with_pdf.usage.input_tokens > plain + 4  # its pages, rendered


def test_max_output_tokens_leaves_the_response_incomplete(create):
    r = create(QUESTION, max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert [e.type for e in create(QUESTION, max_output_tokens=3, stream=True)][-1] == "response.incomplete"


def test_reasoning_effort_minimal_answers_without_thinking(create):
    r = create(QUESTION, reasoning={"effort": "minimal"})
    assert r.output_text == ANSWER and all(o.type != "reasoning" for o in r.output)
    assert r.usage.output_tokens_details.reasoning_tokens == 0


BAD = {
    "an unknown previous_response_id": ({"previous_response_id": "resp_123"}, "is not a response this server keeps"),
    "a hosted tool": ({"tools": [{"type": "web_search"}]}, "function tools only"),
    "an unknown item": ({"input": [{"type": "computer_call"}]}, "is not one of message"),
    "an image by file id": ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f1"}]}]},
                            "file_id is not supported"),
    "no input": ({"input": None}, "input"),
    "an empty input": ({"input": []}, "input holds no message"),
    "only past reasoning": ({"input": [{"type": "reasoning", "summary": []}]}, "input holds no message"),
    "a format that is not an object": ({"text": {"format": "json"}}, "text.format must be an object"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_are_400s_and_the_server_keeps_serving(server, create, case):
    extra, words = BAD[case]
    code, body, _ = server.request("POST", "/v1/responses", {"input": QUESTION, **extra})
    assert code == 400 and words in body["error"]["message"], body
    assert create(QUESTION).output_text == ANSWER


def test_output_text_logprobs_when_included(create):
    r = create(QUESTION, include=["message.output_text.logprobs"], top_logprobs=2)
    part = r.output[-1].content[0]
    assert "".join(t.token for t in part.logprobs) == part.text == ANSWER
    assert all(len(t.top_logprobs) == 2 for t in part.logprobs)
    events = list(create(QUESTION, include=["message.output_text.logprobs"], stream=True))
    done = [e for e in events if e.type == "response.output_text.done"][0]
    assert "".join(t.token for t in done.logprobs) == ANSWER
    assert create(QUESTION).output[-1].content[0].logprobs == []


def test_previous_response_id_goes_on_from_a_kept_response(client, create, server, media):
    """store (the default): the response is kept; previous_response_id puts its conversation (its
    input and output, not its instructions) before the new input, as if sent whole; GET returns it,
    DELETE forgets it; store=false keeps nothing."""
    picture = {"type": "input_image", "image_url": image(media["png"])["image_url"]["url"]}
    asked = [{"role": "user", "content": [picture, {"type": "input_text", "text": QUESTION}]}]
    first = create(asked, instructions="Be brief.")
    assert first.store and client.responses.retrieve(first.id).output_text == ANSWER
    second = create("And the red one?", previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.output_text == ANSWER
    whole = [*asked, *[o.model_dump(exclude_none=True) for o in first.output],
             {"role": "user", "content": "And the red one?"}]
    explicit = create(whole)
    assert second.usage.input_tokens == explicit.usage.input_tokens  # the same conversation, sent whole
    assert second.usage.input_tokens_details.cached_tokens > 0  # (the first turn's KV cache was reused)
    streamed = list(create("And the green one?", previous_response_id=second.id, stream=True))
    third = streamed[-1].response
    assert client.responses.retrieve(third.id).previous_response_id == second.id
    assert third.usage.input_tokens > second.usage.input_tokens
    code, body, _ = server.request("DELETE", f"/v1/responses/{second.id}")
    assert code == 200 and body["deleted"] is True
    code, body, _ = server.request("GET", f"/v1/responses/{second.id}")
    assert code == 404 and "no response" in body["error"]["message"]
    code, body, _ = server.request("POST", "/v1/responses", {"input": "x", "previous_response_id": second.id})
    assert code == 400 and "send the whole conversation" in body["error"]["message"]
    unkept = create(QUESTION, store=False)
    assert not unkept.store and server.request("GET", f"/v1/responses/{unkept.id}")[0] == 404

