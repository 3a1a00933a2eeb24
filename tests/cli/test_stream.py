"""The think / answer / box state machine: whole texts, and the same texts split at every boundary
(tags cut in two), character by character, and at random points, must give the same events."""

from __future__ import annotations

import random

import pytest

from glmv_cli.stream import Answer, StreamParser, Thinking, parse
from glmv_cli.tokenizer import Tokenizer
from tests.cli.crafted import ANSWER, RAW, THINKING

# raw text -> (thinking, answer, unfinished)
CASES = {
    "tagged": ("<think>\nLet me see.\n</think>\n<answer>A cat.</answer>", "Let me see.", "A cat.", None),
    "no answer tags": ("<think>hmm</think>\n\nIt is red.", "hmm", "It is red.", None),
    "no tags at all": ("Just an answer.\n", "", "Just an answer.", None),
    "boxed": ("<think>x</think><answer>It is <|begin_of_box|>42<|end_of_box|>.</answer>", "x", "It is 42.", None),
    "box without answer tag": ("<think>x</think><|begin_of_box|>B<|end_of_box|>", "x", "B", None),
    "cut while thinking": ("<think>Let me think about th", "Let me think about th", "", "thinking"),
    "cut in answer": ("<think>a</think><answer>The ans", "a", "The ans", "answer"),
    "literal brackets": ("<think>if a < b and c<d</think><answer>x <3 y <thin</answer>", "if a < b and c<d",
                         "x <3 y <thin", None),
    "partial tag at end": ("<think>a</think><answer>b</ans", "a", "b</ans", "answer"),
    "inner whitespace kept": ("<think> a\n\nb </think><answer>\n line 1\n line 2\n</answer>", "a\n\nb",
                              "line 1\n line 2", None),
    "text after answer": ("<think>t</think><answer>a</answer>\n", "t", "a", None),
    "empty thinking": ("<think></think><answer>ok</answer>", "", "ok", None),
    "scripted model": (RAW, THINKING, ANSWER, None),
}


def run(chunks) -> tuple[list, StreamParser]:
    parser = StreamParser()
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.finish()
    return events, parser


def merged(events) -> list[tuple[str, str, bool]]:
    """Adjacent events of one kind joined (how they are split is the stream's business)."""
    out: list[list] = []
    for e in events:
        key = (type(e).__name__, getattr(e, "boxed", False))
        if out and (out[-1][0], out[-1][2]) == key:
            out[-1][1] += e.text
        else:
            out.append([key[0], e.text, key[1]])
    return [tuple(x) for x in out]


@pytest.mark.parametrize("name", list(CASES))
def test_whole_text(name):
    raw, thinking, answer, unfinished = CASES[name]
    events, parser = run([raw])
    assert (parser.thinking, parser.answer, parser.unfinished) == (thinking, answer, unfinished)
    assert "".join(e.text for e in events if isinstance(e, Thinking)) == thinking
    assert "".join(e.text for e in events if isinstance(e, Answer)) == answer
    assert parse(raw) == (thinking, answer)


@pytest.mark.parametrize("name", list(CASES))
def test_every_split_point_gives_the_same_events(name):
    raw = CASES[name][0]
    want = merged(run([raw])[0])
    for i in range(len(raw) + 1):
        assert merged(run([raw[:i], raw[i:]])[0]) == want, f"split at {i}: {raw[:i]!r} | {raw[i:]!r}"
    for i in range(len(raw) + 1):  # every pair of split points (three pieces)
        for j in range(i, len(raw) + 1, 3):
            assert merged(run([raw[:i], raw[i:j], raw[j:]])[0]) == want
    assert merged(run(list(raw))[0]) == want


@pytest.mark.parametrize("seed", range(20))
def test_random_splits(seed):
    rng = random.Random(seed)
    for raw, *_ in CASES.values():
        cuts = sorted(rng.sample(range(len(raw) + 1), min(len(raw), rng.randint(1, 8))))
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        assert merged(run(pieces)[0]) == merged(run([raw])[0])


def test_boxed_flag_and_whitespace_outside_the_box():
    events, _ = run(["<answer>It is <|begin_of_box|>42<|end_of_box|> now</answer>"])
    assert [(e.text, e.boxed) for e in events] == [("It is", False), (" ", False), ("42", True), (" now", False)]


def test_token_streams_through_the_tokenizer(scripted):
    """Ids -> StreamDecoder deltas -> events, one id at a time, equal to parsing the whole text."""
    tok = Tokenizer.from_folder(scripted)
    for raw, thinking, answer, _ in CASES.values():
        ids = tok.encode(raw)
        decoder, parser = tok.stream(), StreamParser()
        for token in ids:
            parser.feed(decoder.feed(token))
        parser.feed(decoder.flush())
        parser.finish()
        assert (parser.thinking, parser.answer) == (thinking, answer), raw
