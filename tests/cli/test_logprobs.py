"""The answer's log-probabilities (app/logprobs.py): which tokens are the answer's, their text and
bytes, and `--logprobs` on the CLI. That the numbers are the model's own distribution is shown
against transformers in tests/model/test_generate.py."""

from __future__ import annotations

import math

import pytest

from glmv_cli import GenerationOptions, Session
from tests.cli.conftest import ROOT, run_glmv
from tests.cli.crafted import ANSWER, THINKING


@pytest.fixture(scope="module")
def session(scripted):
    return Session(scripted, device="cpu")


def test_the_answers_tokens_only_their_text_joined_is_the_answer(session):
    result = session.run("Where?", generation=GenerationOptions(temperature=0, logprobs=2))
    tokens = result.logprobs
    assert "".join(t["token"] for t in tokens) == result.answer == ANSWER  # no thinking, tags or box markers
    assert all(bytes(t["bytes"]).decode() == t["token"] for t in tokens)
    for t in tokens:  # greedy: the chosen token is the likeliest, and it is nearly certain (the script)
        assert len(t["top_logprobs"]) == 2 and t["top_logprobs"][0]["token"] == t["token"]
        assert t["logprob"] == t["top_logprobs"][0]["logprob"] and -1e-3 < t["logprob"] <= 0
        assert t["top_logprobs"][1]["logprob"] < t["logprob"]
    assert not any(t["token"] in THINKING for t in tokens)


def test_none_unless_asked(session):
    result = session.run("Where?", generation=GenerationOptions(temperature=0))
    assert result.logprobs is None and "logprobs" not in result.to_json()


def test_tokens_that_split_a_character_keep_their_bytes(tiny):
    from glmv_cli.tokenizer import Tokenizer

    tok = Tokenizer.from_folder(tiny)
    ids = tok.encode("héllo 😀 <think>")
    parts = [tok.token_bytes(i) for i in ids]
    assert b"".join(parts) == "héllo 😀 <think>".encode()
    assert any(len(p) == 1 and p[0] >= 0x80 for p in parts)  # a lone byte of a multi-byte character


def test_cli_logprobs_say_how_sure_a_choice_is():
    run = run_glmv("ask", ROOT / "examples" / "shapes.png", "What color is the circle?", "--model", "demo",
                   "--choice", "red", "--choice", "green", "--choice", "blue", "--logprobs", "3", "--json")
    assert run.code == 0, run.err
    [token] = run.json["logprobs"]
    assert token["token"] == run.json["answer"] == "green" and math.exp(token["logprob"]) > 0.5
    assert len(token["top_logprobs"]) == 3 and token["top_logprobs"][0]["token"] == "green"


def test_cli_logprobs_need_json_output():
    run = run_glmv("ask", "hi", "--model", "demo", "--logprobs", "2")
    assert run.code == 2 and run.out == "" and run.err.count("\n") == 1 and "--json or --jsonl" in run.err
