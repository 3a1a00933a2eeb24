"""Tool calls (app/tools.py): the tools shown through the checkpoint's chat template, the calls read
from GLM's <tool_call> replies, results sent back as tool turns, and answers held to calls.

The scripted checkpoint (tool_checkpoints.py) thinks and then calls get_weather; the random one,
sampled at temperature 1, writes noise that tool_choice "required" still turns into calls a
program can run, with arguments that keep to their schemas."""

from __future__ import annotations

import json
import re

import pytest

from glmv_cli import GenerationOptions, Session
from glmv_cli.app.tools import CallSplitter, ToolCall, ToolCalled, ToolUse, split_calls
from glmv_cli.errors import InputError
from glmv_cli.prompt import Turn, build_inputs
from glmv_cli.stream import Answer
from tests.cli.tool_checkpoints import TOOL_THINKING, WEATHER

ALARM = {"type": "function", "function": {"name": "set_alarm", "parameters": {"type": "object", "properties": {
    "hour": {"type": "integer", "minimum": 0, "maximum": 23}, "loud": {"type": "boolean"},
    "tone": {"enum": ["beep", "chime"]}, "label": {"type": "string", "maxLength": 8}},
    "required": ["hour", "tone"]}}}
LIGHTS = {"type": "function", "function": {"name": "lights", "parameters": {"type": "object", "properties": {
    "on": {"type": "boolean"}, "rooms": {"type": "array", "items": {"enum": ["hall", "bed"]}, "maxItems": 2}},
    "required": ["on"]}}}
SEEDS = range(5)
REPLY = ("Let me check.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>123</arg_value>\n"
         "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>\n<tool_call>lights\n"
         "<arg_key>on</arg_key>\n<arg_value>true</arg_value>\n<arg_key>rooms</arg_key>\n"
         "<arg_value>[\"hall\"]</arg_value>\n</tool_call>")


def uses(*tools, choice=None, parallel=None) -> ToolUse:
    return ToolUse.from_openai(list(tools), choice, parallel)


# -- reading calls -----------------------------------------------------------------------------------

def test_calls_are_read_with_each_value_typed_by_its_schema():
    text, calls = split_calls(REPLY, uses(WEATHER, LIGHTS))
    assert text == "Let me check."
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", {"city": "123", "days": 3}),  # city is a string in the schema: "123" stays text
        ("lights", {"on": True, "rooms": ["hall"]})]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)
    assert json.loads(calls[1].openai()["function"]["arguments"]) == {"on": True, "rooms": ["hall"]}


def test_streamed_in_pieces_the_calls_and_text_are_the_same_as_whole():
    for size in (1, 3, 7):
        splitter, pieces = CallSplitter(uses(WEATHER, LIGHTS)), []
        for k in range(0, len(REPLY), size):
            pieces += splitter.feed(REPLY[k:k + size])
        pieces += splitter.finish()
        assert "".join(p for p in pieces if isinstance(p, str)) == "Let me check."
        assert [(c.name, c.arguments) for c in pieces if isinstance(c, ToolCall)] == [
            ("get_weather", {"city": "123", "days": 3}), ("lights", {"on": True, "rooms": ["hall"]})]


def test_text_that_only_looks_like_a_call_and_an_unfinished_call_stay_text():
    splitter = CallSplitter(uses(WEATHER))
    pieces = splitter.feed("a <tool b") + splitter.feed(" c\n<tool_call>get_weather\n<arg_key>ci")
    pieces += splitter.finish()
    assert splitter.calls == [] and splitter.text == "a <tool b c\n<tool_call>get_weather\n<arg_key>ci"


@pytest.mark.parametrize("tools, choice, message", [
    ("not a list", None, "tools must be a list"),
    ([{"type": "function"}], None, "tools[0] must be"),
    ([{"type": "function", "function": {"name": "bad name!"}}], None, "tools[0].function.name"),
    ([WEATHER, WEATHER], None, "names a function twice"),
    ([WEATHER], {"type": "function", "function": {"name": "nope"}}, "'nope', which is not among the tools"),
    ([WEATHER], "sometimes", "tool_choice is"),
    (None, "required", "the request has no tools"),
    ([{"type": "function", "function": {"name": "f", "parameters": []}}], None, "parameters must be"),
])
def test_malformed_tools_fail_in_one_line_naming_the_field(tools, choice, message):
    with pytest.raises(InputError, match=re.escape(message)) as e:
        ToolUse.from_openai(tools, choice)
    assert "\n" not in str(e.value)


def test_no_tools_or_tool_choice_none_show_no_tools():
    assert ToolUse.from_openai(None) is None and ToolUse.from_openai([WEATHER], "none") is None
    assert uses(WEATHER).choice == "auto" and not uses(WEATHER).held
    assert uses(WEATHER, choice="required").held and not uses(WEATHER, parallel=False).parallel


# -- prompts -----------------------------------------------------------------------------------------

def test_tools_calls_and_results_go_through_the_checkpoints_template(tool_scripted, media):
    from glmv_cli.app.attachments import resolve
    from glmv_cli.app.loaders import LoadOptions, load

    session = Session(tool_scripted, device="cpu")
    image = load(resolve(str(media["png"])), session.image_spec, session.video_spec, LoadOptions()).parts
    call = ToolCall("get_weather", {"city": "Paris", "days": 3}, "call_1")
    turns = [Turn.user("Weather in Paris?"), Turn.assistant("<think>hm</think>Checking.", (call,)),
             Turn.tool('{"temp": 21}', *image, call_id="call_1")]
    inputs = build_inputs(turns, session.tokenizer, session.prompt_config, tools=uses(WEATHER).templated())
    text = session.tokenizer.decode(inputs.input_ids[0].tolist())
    assert '{"type": "function", "function": {"name": "get_weather"' in text  # the tools, as JSON
    assert ("Checking.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
            "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>") in text  # the past call
    assert "hm" not in text  # (its thinking is not kept)
    assert '<|observation|>\n<tool_response>\n{"temp": 21}<|begin_of_image|>' in text  # the result, image too
    assert inputs.image_grid_thw is not None and text.endswith("<|assistant|>\n")


def test_a_checkpoint_whose_template_takes_no_tools_refuses_them(tiny):
    with pytest.raises(InputError, match="chat template shows the model no tools") as e:
        Session(tiny, device="cpu").run("hi", generation=GenerationOptions(tools=uses(WEATHER)))
    assert "\n" not in str(e.value)


def test_template_switches_reach_the_template(tool_scripted):
    session = Session(tool_scripted, device="cpu")
    on = build_inputs([Turn.user("hi")], session.tokenizer, session.prompt_config)
    off = build_inputs([Turn.user("hi")], session.tokenizer, session.prompt_config,
                       template_kwargs={"enable_thinking": False})
    assert session.tokenizer.decode(off.input_ids[0].tolist()).endswith("hi/nothink<|assistant|>\n<think></think>\n")
    assert not session.tokenizer.decode(on.input_ids[0].tolist()).endswith("<think></think>\n")


# -- replies -----------------------------------------------------------------------------------------

def test_a_reply_that_calls_a_tool_and_the_results_turn_after_it(tool_scripted):
    chat = Session(tool_scripted, device="cpu").conversation()
    gen = GenerationOptions(temperature=0, tools=uses(WEATHER), max_new_tokens=40)
    events = list(chat.ask("Weather in Paris?", generation=gen))
    result = events[-1].result
    assert [e.call for e in events if isinstance(e, ToolCalled)] == result.tool_calls
    assert not [e for e in events if isinstance(e, Answer)]  # nothing but the call is answer text
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("get_weather", {"city": "Paris", "days": 3})]
    assert (result.thinking, result.answer, result.finish_reason) == (TOOL_THINKING, "", "tool_calls")
    assert result.to_json()["tool_calls"][0]["function"]["name"] == "get_weather"
    assert chat.turns[-1].tool_calls == tuple(result.tool_calls)  # the history holds the call itself
    after = chat.run('{"temp": 21}', generation=gen, role="tool", call_id=result.tool_calls[0].id)
    assert chat.turns[-2] == Turn.tool('{"temp": 21}', call_id=result.tool_calls[0].id)
    assert after.usage.cached_tokens > 0  # the prompt so far was in the KV cache


def test_without_tools_the_same_reply_is_plain_text(tool_scripted):
    result = Session(tool_scripted, device="cpu").run("Weather?", generation=GenerationOptions(temperature=0))
    assert result.tool_calls == [] and result.answer.startswith("<tool_call>get_weather")


@pytest.fixture(scope="module")
def noise(tool_random):
    return Session(tool_random, device="cpu")


def draw(session, seed, use):
    gen = GenerationOptions(temperature=1.0, seed=seed, tools=use, max_new_tokens=800)
    return session.run("Wake me at seven", generation=gen)


def valid(call: ToolCall) -> bool:
    a = call.arguments
    if call.name == "set_alarm":
        return (set(a) <= {"hour", "loud", "tone", "label"} and {"hour", "tone"} <= set(a)
                and isinstance(a["hour"], int) and 0 <= a["hour"] <= 23 and a["tone"] in ("beep", "chime")
                and isinstance(a.get("loud", True), bool) and len(a.get("label", "")) <= 8)
    return (call.name == "lights" and set(a) <= {"on", "rooms"} and isinstance(a["on"], bool)
            and set(a.get("rooms", [])) <= {"hall", "bed"} and len(a.get("rooms", [])) <= 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_required_turns_sampled_noise_into_valid_calls(noise, seed):
    result = draw(noise, seed, uses(ALARM, LIGHTS, choice="required"))
    assert result.finish_reason == "tool_calls" and result.answer == "", result.raw
    assert result.tool_calls and all(valid(c) for c in result.tool_calls), result.raw


def test_a_named_tool_one_call_and_auto(noise):
    named = [draw(noise, s, uses(ALARM, LIGHTS, choice={"type": "function", "function": {"name": "lights"}}))
             for s in SEEDS]
    assert all(len(r.tool_calls) == 1 and r.tool_calls[0].name == "lights" and valid(r.tool_calls[0])
               for r in named), [r.raw for r in named]
    single = [draw(noise, s, uses(ALARM, LIGHTS, choice="required", parallel=False)) for s in SEEDS]
    assert all(len(r.tool_calls) == 1 and valid(r.tool_calls[0]) for r in single), [r.raw for r in single]
    free = [draw(noise, s, uses(ALARM, LIGHTS)) for s in SEEDS]  # "auto": the noise calls nothing valid
    assert not any(r.tool_calls and all(valid(c) for c in r.tool_calls) for r in free)


def test_a_format_and_required_calls_cannot_both_hold_the_answer(noise):
    from glmv_cli.app.answer_format import AnswerFormat

    gen = GenerationOptions(tools=uses(ALARM, choice="required"), format=AnswerFormat.choice(["a"]))
    with pytest.raises(InputError, match="send one of them"):
        noise.run("hi", generation=gen)


def test_the_think_budget_closes_the_thought_without_answer_tags(tool_scripted):
    session = Session(tool_scripted, device="cpu")
    assert not session.prompt_config.answer_tags
    budget = session.think_budget(0)
    assert budget.forced == (session.tokenizer.token_id("</think>"),)  # GLM-4.6V answers untagged


def test_no_think_uses_the_templates_switch_else_closes_the_thinking_at_once(tool_scripted, scripted):
    from tests.cli.conftest import run_glmv
    from tests.cli.crafted import ANSWER

    args = ("ask", "Weather?", "--json", "--temperature", "0", "--max-new-tokens", "40")
    on, off = run_glmv(*args, "--model", tool_scripted), run_glmv(*args, "--no-think", "--model", tool_scripted)
    assert on.code == off.code == 0, on.err + off.err
    # the template's switch ("/nothink", an empty <think></think>): the prompt changes, the model is not forced
    assert off.json["usage"]["prompt_tokens"] > on.json["usage"]["prompt_tokens"]
    assert off.json["thinking"] == on.json["thinking"] == TOOL_THINKING
    # GLM-4.1V's template has no switch: the thought is closed as soon as it opens
    plain = run_glmv(*args, "--no-think", "--model", scripted)
    assert plain.code == 0 and plain.json["raw"].startswith("<think></think><answer>"), plain.err
    assert (plain.json["thinking"], plain.json["answer"]) == ("", ANSWER)
