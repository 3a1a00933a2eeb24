"""Answers in a required format (app/answer_format.py): JSON of a schema, a choice, a regex.

A tiny random checkpoint writes noise; with a format, every sampled answer still parses and keeps
to it (and without one, the same draws do not), which only the token masks can make true. The
scripted checkpoint shows that the thinking is left alone and where each step of the reply goes.
The CLI runs as a real process on the demo model."""

from __future__ import annotations

import json
import re

import pytest

from glmv_cli import GenerationOptions, Session
from glmv_cli.app.answer_format import AnswerFormat, AnswerSteering, closed_objects
from glmv_cli.errors import InputError
from tests.cli.conftest import ROOT, run_glmv
from tests.cli.crafted import THINKING

COLORS = ["red", "green", "blue"]
SCHEMA = {"type": "object", "required": ["color", "count", "ok", "tags"], "properties": {
    "color": {"enum": COLORS}, "count": {"type": "integer", "minimum": 0, "maximum": 20},
    "ok": {"type": "boolean"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}}}
SEEDS = range(6)


@pytest.fixture(scope="module")
def session(tiny):
    return Session(tiny, device="cpu")


def draw(session, seed, fmt=None, **kw):
    options = dict(max_new_tokens=80, temperature=1.0, seed=seed, think_budget=2, format=fmt) | kw
    return session.run("What is in the picture?", generation=GenerationOptions(**options))


def keeps_to_schema(answer: str) -> bool:
    try:
        d = json.loads(answer)
    except ValueError:
        return False
    return (set(d) == set(SCHEMA["required"]) and d["color"] in COLORS and isinstance(d["count"], int)
            and 0 <= d["count"] <= 20 and isinstance(d["ok"], bool) and len(d["tags"]) <= 3
            and set(d["tags"]) <= {"a", "b"})


@pytest.mark.parametrize("seed", SEEDS)
def test_sampled_noise_still_answers_json_of_the_schema(session, seed):
    result = draw(session, seed, AnswerFormat.json_schema(SCHEMA))
    assert result.finish_reason == "stop", result.raw
    assert keeps_to_schema(result.answer), result.raw


def test_without_the_format_the_same_draws_are_not_json(session):
    assert not any(keeps_to_schema(draw(session, seed).answer) for seed in SEEDS)


@pytest.mark.parametrize("seed", SEEDS)
def test_choices_and_regexes(session, seed):
    assert draw(session, seed, AnswerFormat.choice(COLORS)).answer in COLORS
    answer = draw(session, seed, AnswerFormat.regex(r"[0-9]{1,3}(\.[0-9]{1,2})? (cm|mm)")).answer
    assert re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,2})? (cm|mm)", answer), answer


def test_forced_tokens_of_the_think_budget_are_followed(session):
    # budget 0: <think> is answered at once by a forced </think><answer>, which the steering must see
    for seed in SEEDS:
        result = draw(session, seed, AnswerFormat.choice(["yes", "no"]), think_budget=0)
        assert result.answer in ("yes", "no") and result.finish_reason == "stop", result.raw


def test_the_thinking_is_left_free(scripted):
    result = Session(scripted, device="cpu").run("Where?", generation=GenerationOptions(
        temperature=0, format=AnswerFormat.choice(["left", "right"])))
    assert result.thinking == THINKING  # the script's own thought, untouched
    assert result.answer in ("left", "right") and result.finish_reason == "stop"
    assert result.raw == f"<think>{THINKING}</think><answer>{result.answer}</answer>"


def test_each_step_allows_what_it_should(session):
    tok, stop = session.tokenizer, (tok_id := session.tokenizer.token_id("<|endoftext|>"),)
    ids = {t: tok.token_id(t) for t in ("<think>", "</think>", "<answer>", "</answer>", "<|user|>")}
    steer = AnswerSteering(AnswerFormat.json_schema({"type": "object", "properties": {"a": {"type": "integer"}},
                                                     "required": ["a"]}), tok, stop, 400)
    start = steer.allowed()
    assert start[ids["<think>"]] and start[ids["<answer>"]] and start[tok.encode("{")[0]]
    assert not start[ids["<|user|>"]] and not start[tok_id] and start.sum() == 3
    steer.feed(ids["<think>"])
    assert steer.allowed() is None  # thinking: anything
    for t in tok.encode("hmm {not json"):
        steer.feed(t)
    steer.feed(ids["</think>"])
    assert steer.allowed().nonzero()[0].tolist() == [ids["<answer>"]]
    steer.feed(ids["<answer>"])
    for t in tok.encode('{"a": 12'):
        assert steer.allowed()[t]
        steer.feed(t)
    assert not steer.complete and not steer.allowed()[ids["</answer>"]]
    steer.feed(tok.encode("}")[0])
    assert steer.complete and steer.allowed().nonzero()[0].tolist() == [ids["</answer>"]]
    steer.feed(ids["</answer>"])
    assert steer.allowed().nonzero()[0].tolist() == [tok_id]


def test_objects_get_only_their_listed_properties(session):
    listed = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {
        "type": "object", "properties": {"c": {"type": "string"}}}}, "enum": [{"properties": 1}]}
    closed = closed_objects(listed)
    assert closed["additionalProperties"] is False and closed["properties"]["b"]["additionalProperties"] is False
    assert closed["enum"] == [{"properties": 1}]  # data, not a schema
    assert closed_objects({**listed, "additionalProperties": True})["additionalProperties"] is True
    assert "additionalProperties" not in closed_objects({"type": "object"})  # any object stays any object

    def accepts(schema, text):
        steer = AnswerSteering(AnswerFormat.json_schema(schema), session.tokenizer, (0,), 400)
        return steer.matcher.try_consume_tokens(session.tokenizer.encode(text)) == len(session.tokenizer.encode(text))

    assert not accepts({"properties": {"a": {}}}, '{"a": 1, "z": 2}')
    assert accepts({"properties": {"a": {}}, "additionalProperties": True}, '{"a": 1, "z": 2}')


@pytest.mark.parametrize("make, message", [
    (lambda: AnswerFormat.json_schema('{"type": "objekt"}'), "the JSON schema is not valid: Invalid type: objekt"),
    (lambda: AnswerFormat.json_schema("{nope"), "the JSON schema is not valid JSON"),
    (lambda: AnswerFormat.json_schema("[1]"), "a JSON schema is a JSON object"),
    (lambda: AnswerFormat.regex("a(b"), "the regular expression is not valid"),
    (lambda: AnswerFormat.choice([]), "choices are one or more non-empty strings"),
    (lambda: AnswerFormat.grammar("start: 'a' | "), "the grammar is not valid"),
])
def test_bad_formats_fail_in_one_line_before_the_weights_load(tiny, make, message):
    session = Session(tiny, device="cpu")
    with pytest.raises(InputError) as e:
        session.run("q", generation=GenerationOptions(format=make()))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not session.loaded


def test_the_cli_answers_in_the_format(tmp_path):
    image = ROOT / "examples" / "shapes.png"
    picked = run_glmv("ask", image, "What color is the circle?", "--model", "demo", "-R",
                      "--choice", "purple", "--choice", "green", "--choice", "orange")
    assert (picked.code, picked.out) == (0, "green\n"), picked.err
    schema = tmp_path / "color.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}},
                                  "required": ["color"]}))
    done = run_glmv("ask", image, "What color is the circle?", "--model", "demo", "--schema", schema, "--json")
    assert done.code == 0, done.err
    assert json.loads(done.json["answer"]) == {"color": "green"} and done.json["thinking"]
    grammar = tmp_path / "color.gbnf"  # llama.cpp's GBNF
    grammar.write_text('root ::= "The circle is " ("red" | "green" | "blue") "."\n')
    said = run_glmv("ask", image, "What color is the circle?", "--model", "demo", "-R", "--grammar", grammar)
    assert (said.code, said.out) == (0, "The circle is green.\n"), said.err


@pytest.mark.parametrize("args, message", [
    (("--schema", "missing.json"), "--schema missing.json: no such file, and not a JSON schema either"),
    (("--schema", '{"type": 3}'), "the JSON schema is not valid"),
    (("--regex", "a(", "--choice", "b"), "--choice and --regex each set the answer's format; give one of them"),
    (("--grammar", "missing.gbnf"), "--grammar missing.gbnf: no such file"),
])
def test_the_cli_refuses_a_bad_format_in_one_line(args, message):
    done = run_glmv("ask", ROOT / "examples" / "shapes.png", "q", "--model", "demo", *args)
    assert done.code == 2 and message in done.err and "Traceback" not in done.err
    assert done.err.count("\n") == 1 and done.out == ""
