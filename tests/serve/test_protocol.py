"""The pieces of `glmv serve` that need no process: stop strings across deltas, and OpenAI messages
-> glmv items (roles, text between attachments kept in place, what is refused)."""

from __future__ import annotations

import pytest

from glmv_cli.app.messages import TextPart, data_uri, parse_messages, split_question
from glmv_cli.errors import InputError
from glmv_cli.serve.protocol import StopFilter


def run(stops, deltas):
    f = StopFilter(stops)
    out = [f.feed(d) for d in deltas]
    return "".join(out) + ("" if f.stopped else f.flush()), f.stopped


@pytest.mark.parametrize("stops, deltas, expected", [
    (["END"], ["abc E", "N", "D tail"], ("abc ", True)),       # split over three deltas
    (["END"], ["abc E", "xyz"], ("abc Exyz", False)),          # a false start is released
    (["\n\n", "Q:"], ["one\n", "\ntwo"], ("one", True)),        # the first stop that appears
    ([], ["a", "b"], ("ab", False)),
    (["END"], ["abc END", " more", "END"], ("abc ", True)),  # nothing after a stop
])
def test_stop_strings_across_deltas(stops, deltas, expected):
    assert run(stops, deltas) == expected


def test_held_text_is_only_a_possible_stop_prefix():
    f = StopFilter(["STOP"])
    assert f.feed("hello ST") == "hello " and f.feed("ART") == "START"


PNG = data_uri(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, "image/png")


def test_text_between_attachments_stays_in_place_and_the_tail_is_the_question():
    messages = parse_messages([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Page 1:"}, {"type": "image_url", "image_url": PNG},
                                     {"type": "text", "text": "What "}, {"type": "text", "text": "is it?"}]}])
    assert [m.role for m in messages] == ["system", "user"]
    items, question = split_question(messages[-1])
    assert question == "What is it?"
    assert isinstance(items[0], TextPart) and items[0].text == "Page 1:" and items[1].mime == "image/png"


def test_a_gif_is_a_video_in_video_url_and_an_image_in_image_url():
    gif = data_uri(b"GIF89a" + b"\x00" * 32, "image/gif")
    (message,) = parse_messages([{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": gif}}, {"type": "image_url", "image_url": {"url": gif}},
        {"type": "text", "text": "What happens?"}]}])
    items, _ = split_question(message)
    assert [item.kind for item in items] == ["video", "image"]


@pytest.mark.parametrize("messages, words", [
    ([{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": PNG}}]},
      {"role": "user", "content": "x"}], "cannot hold images"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "last message"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}], "not a data:"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}],
     "--allowed-local-media-path"),
    ([{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}], "file_id"),
    ([{"role": "user", "content": 7}], "string or a list"),
])
def test_malformed_messages_name_the_problem(messages, words):
    with pytest.raises(InputError, match=words):
        parse_messages(messages)


def test_openai_sampling_fields_reach_the_generation_options():
    from glmv_cli.serve.protocol import ChatRequest

    gen = ChatRequest(messages=[{"role": "user", "content": "hi"}], presence_penalty=0.5, frequency_penalty=-1.0,
                      logprobs=True, top_logprobs=3, chat_template_kwargs={"enable_thinking": False}).generation()
    assert (gen.presence_penalty, gen.frequency_penalty, gen.logprobs) == (0.5, -1.0, 3)
    assert gen.template_kwargs == {"enable_thinking": False}
    with pytest.raises(ValueError, match="frequency_penalty"):
        ChatRequest(messages=[{"role": "user", "content": "hi"}], frequency_penalty=2.5)
