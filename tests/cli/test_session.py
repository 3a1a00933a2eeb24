"""The Python API the CLI uses: Session / Conversation events, results, the think budget, history,
and generation ids equal to the lead's Generation (same prefill, sampling and stop handling)."""

from __future__ import annotations

import pytest
import torch

from glmv_cli import Answer, Done, GenerationOptions, Note, Progress, Session, Thinking
from glmv_cli.errors import InputError
from glmv_cli.prompt import Turn, build_inputs
from tests.cli.crafted import ANSWER, RAW, THINKING


@pytest.fixture(scope="module")
def session(scripted):
    return Session(scripted, device="cpu")


def test_events_in_order_and_result(session, media):
    events = list(session.ask("Where is the blue square?", [str(media["png"])]))
    kinds = [type(e) for e in events]
    assert kinds[0] is Progress and kinds[-1] is Done
    first_text = next(i for i, k in enumerate(kinds) if k in (Thinking, Answer))
    assert all(k is Progress for k in kinds[:first_text])
    assert kinds.index(Answer) > kinds.index(Thinking)
    assert "".join(e.text for e in events if isinstance(e, Thinking)) == THINKING
    assert "".join(e.text for e in events if isinstance(e, Answer)) == ANSWER
    result = events[-1].result
    assert (result.thinking, result.answer, result.raw, result.finish_reason) == (THINKING, ANSWER, RAW, "stop")
    assert result.usage.completion_tokens == len(result.completion_ids) == 10
    assert result.usage.image_tokens == 3 * 4  # 120x80 -> 112x84 pixels -> (84/28) x (112/28) merged patches
    assert [b.coords for b in result.boxes] == [[120, 250, 500, 750]]
    assert result.to_json()["boxes"][0]["pixels"] == [{"image": str(media["png"]), "box": [14, 20, 60, 60]}]


@pytest.mark.parametrize("budget,thinking", [(0, ""), (1, "Let me look."), (2, THINKING), (50, THINKING)])
def test_think_budget_forces_the_answer(session, budget, thinking):
    result = session.run("q", generation=GenerationOptions(think_budget=budget))
    assert result.thinking == thinking
    assert result.answer == ANSWER
    forced = "<think>" + thinking + "</think><answer>"
    assert result.raw.startswith(forced)


def test_unfinished_thinking_and_answer_give_notes(session):
    events = list(session.ask("q", generation=GenerationOptions(max_new_tokens=2)))
    notes = [e.message for e in events if isinstance(e, Note)]
    result = events[-1].result
    assert (result.thinking, result.answer, result.finish_reason) == ("Let me look.", "", "length")
    assert len(notes) == 1 and "still thinking" in notes[0] and "--think-budget" in notes[0]
    result = session.run("q", generation=GenerationOptions(max_new_tokens=6))
    assert result.answer == "The blue square is at"
    assert result.notes and "cut off at 6 new tokens" in result.notes[0]


def test_stop_strings_end_decoding_with_the_usage_so_far(session):
    """GenerationOptions.stop (the server's `stop`): decoding ends at the token that completes a stop
    string; the result's answer ends before it, its usage counts the tokens decoded."""
    full = session.run("q")
    result = session.run("q", generation=GenerationOptions(stop=("square is", "never")))
    assert (result.answer, result.finish_reason) == ("The blue ", "stop")
    assert 0 < result.usage.completion_tokens < full.usage.completion_tokens
    assert result.completion_ids == full.completion_ids[:result.usage.completion_tokens]
    assert session.run("q", generation=GenerationOptions(stop=("never",))).completion_ids == full.completion_ids


def test_history_keeps_answers_not_thinking(session, media):
    chat = session.conversation(system="Be brief.")
    chat.run("Where is it?", [str(media["png"])])
    chat.run("And now?")
    assert [t.role for t in chat.turns] == ["system", "user", "assistant", "user", "assistant"]
    prompt = build_inputs([*chat.turns[:4]], session.tokenizer, session.prompt_config)
    text = session.tokenizer.decode(prompt.input_ids[0].tolist())
    assert "The blue square is at" in text and "Let me look" not in text
    assert "Be brief." in text and text.count("<|begin_of_image|>") == 1
    md = chat.transcript()
    assert "Where is it?" in md and "Attached: `" in md and "[[120,250,500,750]]" in md and "Let me" not in md
    chat.reset()
    assert chat.turns == [Turn.system("Be brief.")]


def test_each_turn_runs_only_what_it_adds(session, media, monkeypatch):
    """The KV cache the last turn left holds the conversation so far (prompt_cache.py): the next
    turn's usage says so, and its answer is the same; GLMV_PROMPT_CACHE=0 runs everything."""
    chat = session.conversation()
    first = chat.run("Where is the blue square?", [str(media["png"])])
    events = list(chat.ask("And the red one?"))
    second = events[-1].result
    assert second.usage.cached_tokens == first.usage.prompt_tokens
    reading = [e.message for e in events if isinstance(e, Progress) and e.message.startswith("reading the prompt")]
    assert reading == [f"reading the prompt ({second.usage.prompt_tokens:,} tokens, "
                       f"{first.usage.prompt_tokens:,} of them read before)"]
    assert second.answer == first.answer == ANSWER
    assert second.to_json()["usage"]["cached_tokens"] == first.usage.prompt_tokens
    monkeypatch.setenv("GLMV_PROMPT_CACHE", "0")
    third = chat.run("And the green one?")
    assert third.usage.cached_tokens == 0 and third.answer == ANSWER


def test_interrupted_turn_stays_in_history(session):
    chat = session.conversation()
    events = chat.ask("q")
    for event in events:
        if isinstance(event, Answer):
            break
    events.close()  # what Ctrl-C in the chat does
    assert chat.turns[-1].role == "assistant" and chat.turns[-1].text.startswith("<think>Let me look.")


def test_input_errors_before_the_weights_load(scripted, media, tmp_path):
    fresh = Session(scripted, device="cpu")
    with pytest.raises(InputError, match="no such file"):
        list(fresh.ask("q", [str(tmp_path / "missing.png")]))
    with pytest.raises(InputError, match="over the 4,096-token context"):
        list(fresh.ask("q", generation=GenerationOptions(max_new_tokens=5000)))
    assert not fresh.loaded


def test_think_budget_needs_the_tags(session):
    with pytest.raises(InputError, match="0 or more"):
        session.think_budget(-1)
    rule = session.think_budget(3)
    tok = session.tokenizer
    assert rule.forced == tuple(tok.encode("</think><answer>")) and rule.budget == 3


torch.set_num_threads(1)


def test_one_session_answers_threads_one_at_a_time_and_refuses_a_half_read_ask(tiny, media):
    """parallel 1: questions from several threads wait their turn (the answers are the ones asked
    alone), and a second question on the thread of a half-read ask() is an InputError, not a KV
    cache two answers overwrite."""
    from concurrent.futures import ThreadPoolExecutor

    session = Session(str(tiny), device="cpu", dtype="float32")
    greedy = GenerationOptions(temperature=0, max_new_tokens=6)
    asks = [("What is this?", [media["png"]]), ("Describe it", [media["jpg"]]), ("Hello there", [])] * 2
    alone = [session.run(q, a, generation=greedy).raw for q, a in asks]
    assert len(set(alone)) > 1  # (the answers differ: mixed-up caches would show)
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda qa: session.run(*qa, generation=greedy).raw, asks))
    assert together == alone
    first = session.ask("What is this?", [media["png"]], generation=greedy)
    next(first)
    with pytest.raises(InputError, match="answering another question on this thread"):
        session.run("Hello there", generation=greedy)
    assert [e for e in first if isinstance(e, Done)][0].result.raw == alone[0]
    assert session.run("Hello there", generation=greedy).raw == alone[2]


def test_the_python_api_takes_a_bare_attachment_a_pil_image_or_a_file(session, media):
    from PIL import Image

    want = session.run("Where?", [media["png"]]).usage.image_tokens
    with open(media["png"], "rb") as f:
        for given in (str(media["png"]), media["png"], Image.open(media["png"]), [Image.open(media["png"])], [f],
                      [memoryview(media["png"].read_bytes())]):
            result = session.run("Where?", given)
            assert result.answer == ANSWER and result.usage.image_tokens == want, given


@pytest.mark.parametrize("call,words", [
    (lambda s: s.run(None), "the question is NoneType, not text"),
    (lambda s: s.run("q", 42), "attachments are a list of paths, URLs, bytes or PIL images, not a int"),
    (lambda s: s.run("q", [3.5]), "an attachment is a path, a URL, bytes, a file or a PIL image, not a float"),
    (lambda s: s.run("q", generation={"max_new_tokens": 5}), "generation= takes a GenerationOptions(...), not a dict"),
    (lambda s: s.run("q", load={"dpi": 72}), "load= takes a LoadOptions(...), not a dict"),
    (lambda s: s.run("q", [b""]), "bytes is empty"),
    (lambda s: __import__("glmv_cli").load(s.folder, device="tpu"), "unknown device 'tpu'"),
    (lambda s: GenerationOptions(temperature=-1), "GenerationOptions.temperature is -1; give at least 0"),
    (lambda s: GenerationOptions(top_p=2), "GenerationOptions.top_p is 2; give 0 to 1"),
    (lambda s: GenerationOptions(repetition_penalty=0), "GenerationOptions.repetition_penalty is 0; give more than 0"),
    (lambda s: GenerationOptions(max_new_tokens=5.5), "GenerationOptions.max_new_tokens is 5.5; give a whole number"),
])
def test_python_api_misuse_is_an_input_error_naming_it(session, call, words):
    with pytest.raises(InputError) as raised:
        call(session)
    assert str(raised.value) == words or str(raised.value).startswith(words)
