"""Text deltas -> typed events: the state machine of the streaming contract.

GLM-4.1V-Thinking writes `<think>reasoning</think><answer>answer</answer>` and may mark the part of
its answer to look at with `<|begin_of_box|>..<|end_of_box|>`. `StreamParser.feed(delta)` takes the
text as it is decoded (special tokens written out) and returns `Thinking` / `Answer` events without
any tag; a tag split across deltas (`"</th"` + `"ink>"`) is held back until it is complete.

    start --<think>--> thinking --</think>--> after_think --<answer> or text--> answer
      |                                                                         |
      +--------- <answer>, a box marker, or any text (models without tags) -----+--</answer>--> done

Whitespace at the start and end of each section is dropped (trailing whitespace is held until more
text follows), so `"<think>\\nA\\n</think>\\n<answer>B</answer>"` gives Thinking("A"), Answer("B").
Text after `</answer>` still counts as answer. Text inside a box is `Answer(text, boxed=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

THINK, END_THINK = "<think>", "</think>"
ANSWER, END_ANSWER = "<answer>", "</answer>"
BOX, END_BOX = "<|begin_of_box|>", "<|end_of_box|>"
TAGS = (THINK, END_THINK, ANSWER, END_ANSWER, BOX, END_BOX)

State = Literal["start", "thinking", "after_think", "answer", "done"]


@dataclass(frozen=True)
class Thinking:
    """A piece of the model's reasoning (stderr)."""

    text: str


@dataclass(frozen=True)
class Answer:
    """A piece of the answer (stdout); `boxed` inside <|begin_of_box|>..<|end_of_box|>."""

    text: str
    boxed: bool = False


Event = Thinking | Answer


class StreamParser:
    """Feed text deltas, get events; `finish()` at the end flushes what is held back.

    `.thinking` and `.answer` accumulate the emitted text; `.state` tells where the stream ended
    ("thinking": the thought was never closed; "answer" after an `<answer>`: never closed).
    """

    def __init__(self) -> None:
        self.state: State = "start"
        self.boxed = False
        self.answer_tagged = False  # an <answer> tag was seen
        self.thinking = ""
        self.answer = ""
        self._buf = ""  # text not yet parsed: at most a partial tag
        self._ws = ""  # whitespace held back at the end of the current section
        self._ws_boxed = False  # whether that whitespace was inside a box
        self._started = False  # the current section has emitted non-whitespace text

    # -- public --------------------------------------------------------------------------------

    def feed(self, delta: str) -> list[Event]:
        self._buf += delta
        events: list[Event] = []
        while self._buf:
            lt = self._buf.find("<")
            if lt < 0:
                self._text(self._buf, events)
                self._buf = ""
                break
            if lt:
                self._text(self._buf[:lt], events)
                self._buf = self._buf[lt:]
            tag = next((t for t in TAGS if self._buf.startswith(t)), None)
            if tag:
                self._buf = self._buf[len(tag):]
                self._tag(tag, events)
            elif any(t.startswith(self._buf) for t in TAGS):
                break  # a tag may still be arriving: wait for the next delta
            else:
                self._text("<", events)
                self._buf = self._buf[1:]
        return events

    def finish(self) -> list[Event]:
        """The end of the stream: a held-back partial tag was plain text after all."""
        events: list[Event] = []
        if self._buf:
            self._text(self._buf, events)
            self._buf = ""
        self._ws = ""
        return events

    @property
    def unfinished(self) -> str | None:
        """What the stream left open ("thinking" or "answer"), or None when it closed cleanly."""
        if self.state == "thinking":
            return "thinking"
        if self.state == "answer" and self.answer_tagged:
            return "answer"
        return None

    # -- internals -----------------------------------------------------------------------------

    def _section(self, state: State) -> None:
        """Enter a new section: whitespace held at the end of the previous one is dropped."""
        if state != self.state:
            self._ws, self._started = "", False
        self.state = state

    def _tag(self, tag: str, events: list[Event]) -> None:
        if tag == THINK:
            self._section("thinking")
        elif tag == END_THINK:
            self._section("after_think")
        elif tag == ANSWER:
            self.answer_tagged = True
            self._section("answer")
        elif tag == END_ANSWER:
            self.state = "done"  # text after </answer> still joins the answer
        else:  # box markers: leave the thinking alone, start the answer anywhere else
            if self.state in ("start", "after_think"):
                self._section("answer")
            self.boxed = tag == BOX

    def _text(self, text: str, events: list[Event]) -> None:
        if self.state in ("start", "after_think"):
            if not text.strip():
                return  # whitespace before the first word of a section
            self._section("answer")
        stripped = text.rstrip()
        if not stripped:
            if self._started:
                self._ws_boxed = self.boxed if not self._ws else self._ws_boxed
                self._ws += text
            return
        body = stripped if self._started else stripped.lstrip()
        if self._ws and self._ws_boxed != self.boxed:  # the space before a box is not in it
            self._emit(self._ws, events, self._ws_boxed)
            self._ws = ""
        self._emit(self._ws + body, events, self.boxed)
        self._ws, self._ws_boxed, self._started = text[len(stripped):], self.boxed, True

    def _emit(self, text: str, events: list[Event], boxed: bool) -> None:
        if self.state == "thinking":
            self.thinking += text
            events.append(Thinking(text))
        else:
            self.answer += text
            events.append(Answer(text, boxed=boxed))


def parse(text: str) -> tuple[str, str]:
    """(thinking, answer) of a whole generated text."""
    parser = StreamParser()
    parser.feed(text)
    parser.finish()
    return parser.thinking, parser.answer
