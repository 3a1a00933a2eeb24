"""Tool calling through `glmv serve` (a real process) and the official `openai` client: `tools` in,
`tool_calls` out (JSON and streamed), the tool's result sent back as a `tool` message (text or an
image), `tool_choice` "none" / "required" / a named function, `chat_template_kwargs`, and bad tool
requests as 400s after which the server keeps serving.

`tool_scripted` (tests/cli/tool_checkpoints.py) has a GLM-4.6V-style template; greedy, it thinks
TOOL_THINKING and then calls get_weather(city="Paris", days=3). `tool_random` writes noise."""

from __future__ import annotations

import json

import pytest

from tests.cli.tool_checkpoints import TOOL_THINKING, WEATHER
from tests.serve.conftest import glmv_server
from tests.serve.test_server import image

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(tool_scripted, tmp_path_factory):
    with glmv_server(tool_scripted, log_dir=tmp_path_factory.mktemp("logs")) as s:
        yield s


@pytest.fixture(scope="module")
def ask(server):
    client = server.client()
    model = client.models.list().data[0].id

    def ask(messages, **kwargs):
        return client.chat.completions.create(messages=messages, model=model, temperature=0, max_tokens=60,
                                              **kwargs)

    return ask


def test_a_reply_that_calls_a_tool(ask):
    done = ask(ASK, tools=[WEATHER])
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.reasoning == TOOL_THINKING
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3}


def test_a_streamed_call_arrives_whole_with_its_index(ask):
    chunks = [c for c in ask(ASK, tools=[WEATHER], stream=True) if c.choices]
    calls = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert [(d.index, d.function.name, json.loads(d.function.arguments)) for d in calls] == [
        (0, "get_weather", {"city": "Paris", "days": 3})]
    assert calls[0].id.startswith("call_")
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ""
    assert "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks) == TOOL_THINKING
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_the_tools_result_goes_back_and_the_prompt_so_far_is_reused(ask, media):
    first = ask(ASK, tools=[WEATHER]).choices[0].message
    call = first.tool_calls[0]
    history = [*ASK, first.model_dump(exclude_none=True)]  # the reply as the client holds it (as the README does)
    text = ask([*history, {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21, "sky": "clear"}'}],
               tools=[WEATHER])
    assert text.choices[0].finish_reason == "tool_calls"  # (the script calls again, whatever it is told)
    assert text.usage.prompt_tokens_details.cached_tokens > 0
    with_image = ask([*history, {"role": "tool", "tool_call_id": call.id, "content": [
        {"type": "text", "text": "the sky camera:"}, image(media["png"])]}], tools=[WEATHER])
    assert with_image.usage.prompt_tokens > text.usage.prompt_tokens  # the image reached the prompt



def test_the_clients_parse_helper_reads_a_pydantic_tools_arguments(server):
    import openai
    from pydantic import BaseModel

    class GetWeather(BaseModel):
        city: str
        days: int

    client = server.client()
    done = client.chat.completions.parse(model=client.models.list().data[0].id, messages=ASK, temperature=0,
                                         tools=[openai.pydantic_function_tool(GetWeather, name="get_weather")])
    parsed = done.choices[0].message.tool_calls[0].function.parsed_arguments
    assert parsed == GetWeather(city="Paris", days=3)

def test_tool_choice_none_shows_no_tools_and_reads_no_calls(ask):
    shown, hidden = ask(ASK, tools=[WEATHER]), ask(ASK, tools=[WEATHER], tool_choice="none")
    assert hidden.usage.prompt_tokens < shown.usage.prompt_tokens  # the tools' system block is left out
    message = hidden.choices[0].message
    assert not message.tool_calls and message.content.startswith("<tool_call>get_weather")
    assert hidden.choices[0].finish_reason == "stop"


def test_chat_template_kwargs_reach_the_template(ask):
    on = ask(ASK).usage.prompt_tokens
    off = ask(ASK, extra_body={"chat_template_kwargs": {"enable_thinking": False}}).usage.prompt_tokens
    assert off > on  # GLM-4.6V's switch: "/nothink" and an empty <think></think> in the prompt


BAD = {
    "a tool without a function": ({"tools": [{"type": "function"}]}, "tools[0] must be"),
    "a tool_choice naming no tool": ({"tools": [WEATHER], "tool_choice": {
        "type": "function", "function": {"name": "get_time"}}}, "'get_time', which is not among the tools"),
    "a past call whose arguments are not JSON": ({"messages": [
        *ASK, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_weather", "arguments": "{city: Paris"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]}, "arguments is not valid JSON"),
    "an assistant message last": ({"messages": [*ASK, {"role": "assistant", "content": "hi"}]},
                                  "the last message must be"),
    "a format and required calls": ({"tools": [WEATHER], "tool_choice": "required",
                                     "response_format": {"type": "json_object"}}, "send one of them"),
    "properties that are not an object": ({"tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": "x"}}}]}, "properties must be an object"),
    "a parameter schema that cannot hold a call": ({"tool_choice": "required", "tools": [{
        "type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
            "x": {"type": "nonsense"}}}}}]}, "the tools' parameters cannot hold a call (failed to compile"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_tool_requests_are_400s_and_the_server_keeps_serving(server, ask, case):
    extra, words = BAD[case]
    code, answer, _ = server.request("POST", "/v1/chat/completions", {"messages": ASK, **extra})
    assert code == 400 and words in answer["error"]["message"], answer
    assert "\n" not in answer["error"]["message"]
    assert ask(ASK, tools=[WEATHER]).choices[0].finish_reason == "tool_calls"


def test_a_model_not_trained_for_tools_refuses_them(scripted, tmp_path):
    with glmv_server(scripted, log_dir=tmp_path) as s:
        code, answer, _ = s.request("POST", "/v1/chat/completions", {"messages": ASK, "tools": [WEATHER]})
        assert code == 400 and "shows the model no tools" in answer["error"]["message"], answer
        code, _, _ = s.request("POST", "/v1/chat/completions", {"messages": ASK, "max_tokens": 4})
        assert code == 200


ALARM = {"type": "function", "function": {"name": "set_alarm", "parameters": {"type": "object", "properties": {
    "hour": {"type": "integer", "minimum": 0, "maximum": 23}, "tone": {"enum": ["beep", "chime"]}},
    "required": ["hour", "tone"]}}}
LAMP = {"type": "function", "function": {"name": "lamp", "parameters": {
    "type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]}}}


def test_required_and_named_calls_hold_over_http(tool_random, tmp_path):
    with glmv_server(tool_random, log_dir=tmp_path) as s:
        client = s.client()
        for seed, choice in [(0, "required"), (1, "required"), (2, {"type": "function", "function": {
                "name": "set_alarm"}})]:
            done = client.chat.completions.create(
                model=client.models.list().data[0].id, messages=ASK, tools=[LAMP, ALARM], tool_choice=choice,
                parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=300)
            [call] = done.choices[0].message.tool_calls
            args = json.loads(call.function.arguments)
            assert done.choices[0].finish_reason == "tool_calls"
            if call.function.name == "set_alarm":
                assert set(args) == {"hour", "tone"} and 0 <= args["hour"] <= 23 and args["tone"] in ("beep", "chime")
            else:
                assert choice == "required" and call.function.name == "lamp" and isinstance(args["on"], bool)


FLAT = {"type": "function", **WEATHER["function"]}  # the Responses API's flat function tool


def test_responses_api_calls_and_takes_the_result_back(server):
    client = server.client()
    model = client.models.list().data[0].id
    first = client.responses.create(model=model, input=ASK[0]["content"], tools=[FLAT], temperature=0)
    [call] = [o for o in first.output if o.type == "function_call"]
    assert (call.name, json.loads(call.arguments), call.status) == ("get_weather", {"city": "Paris", "days": 3},
                                                                    "completed")
    items = [*ASK, *(o.model_dump(exclude_none=True) for o in first.output),
             {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}]
    then = client.responses.create(model=model, input=items, tools=[FLAT], temperature=0)
    assert then.usage.input_tokens_details.cached_tokens > 0  # the history rendered as the model wrote it
    with client.responses.stream(model=model, input=ASK[0]["content"], tools=[FLAT], temperature=0) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds
    assert [o.type for o in final.output] == ["reasoning", "function_call"]
    assert json.loads(final.output[1].arguments) == {"city": "Paris", "days": 3}


MALFORMED = [  # (route, body): each is the client's mistake, so a 4xx, never a 500
    ("chat/completions", {"messages": ASK, "tools": [1]}),
    ("chat/completions", {"messages": ASK, "tool_choice": 5}),
    ("chat/completions", {"messages": ASK, "tools": [WEATHER], "tool_choice": {"type": "function", "function": "x"}}),
    ("chat/completions", {"messages": ASK, "chat_template_kwargs": "x"}),
    ("chat/completions", {"messages": [*ASK, {"role": "assistant", "tool_calls": [1]}, *ASK]}),
    ("chat/completions", {"messages": [*ASK, {"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": "[1]"}}]}, *ASK]}),
    ("chat/completions", {"messages": [{"role": "tool", "content": [{"type": "image_url"}]}]}),
    ("chat/completions", {"messages": ASK, "tool_choice": "required", "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"properties": {"x": {"enum": []}}, "required": ["x"]}}}]}),
    ("responses", {"input": [5]}),
    ("responses", {"input": [{"role": "user", "content": [5]}]}),
    ("responses", {"input": [{"type": "function_call"}]}),
    ("responses", {"input": [{"type": "function_call_output", "output": 5}]}),
    ("responses", {"input": "x", "text": {"format": "json"}}),
    ("responses", {"input": "x", "text": {"format": {"type": "json_schema"}}}),
    ("responses", {"input": "x", "tools": [{"type": "function"}]}),
    ("responses", {"input": "x", "reasoning": "high"}),
    ("responses", {"input": [{"role": "user", "content": [{"type": "input_file", "file_data": 5}]}]}),
]


@pytest.mark.parametrize("stream", [False, True])
def test_no_malformed_tool_or_responses_body_is_a_500(server, ask, stream):
    for route, body in MALFORMED:
        code, answer, _ = server.request("POST", f"/v1/{route}", {**body, "stream": stream})
        message = answer["error"]["message"]
        assert 400 <= code < 500 and "\n" not in message and "internal error" not in message, (route, body, answer)
    assert ask(ASK, tools=[WEATHER]).choices[0].finish_reason == "tool_calls"
