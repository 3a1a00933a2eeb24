"""What a Session gives and takes: the events of one answer, its options and its Result.

Progress and Note (for the user, not the answer), Thinking and Answer (stream.py) and ToolCalled
(tools.py) as generated, then one Done with the Result. `collect` runs a stream to its Result.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from glmv_cli.app.answer_format import AnswerFormat
from glmv_cli.app.boxes import Box, boxes_json
from glmv_cli.app.meter import Meter
from glmv_cli.app.tools import ToolCall, ToolCalled, ToolUse
from glmv_cli.errors import InputError
from glmv_cli.stream import Answer, Thinking


@dataclass(frozen=True)
class Progress:
    """Something slow is starting (for a transient status line). `meter`, where the step says how
    far it has come (loading the weights, reading the prompt): watch it for the share done and the
    time left (meter.py)."""

    message: str
    meter: Meter | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Note:
    """Something the user should know about the result (one line for stderr)."""

    message: str


@dataclass(frozen=True)
class GenerationOptions:
    """None: generation_config.json's value (sampling), else glmv's default."""

    max_new_tokens: int | None = None
    temperature: float | None = None  # 0 = greedy
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None  # OpenAI's, on the generated tokens
    frequency_penalty: float | None = None
    think_budget: int | None = None  # thinking tokens before </think><answer> is forced
    max_context: int | None = None  # default: the model's max_position_embeddings
    stop: tuple[str, ...] = ()  # strings that end generation once the answer holds one (OpenAI's `stop`)
    format: AnswerFormat | None = None  # what the answer must be: JSON of a schema, a choice, ... (answer_format.py)
    tools: ToolUse | None = None  # functions the model may call, and whether it must (tools.py)
    template_kwargs: dict = field(default_factory=dict)  # the chat template's switches, e.g. enable_thinking
    logprobs: int | None = None  # the answer's log-probabilities, with this many alternatives (app/logprobs.py)
    prediction: str | None = None  # text the answer is expected to repeat (OpenAI's `prediction`): drafted from

    def __post_init__(self):
        """An InputError naming the field for a value no model could use (the CLI's options and the
        server's fields are checked as they are read; this is the Python API's check)."""
        def number(name, value, low=None, high=None, *, whole=False, above=False):
            if value is None:
                return
            kind = int if whole else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise InputError(f"GenerationOptions.{name} is {value!r}; give {'a whole' if whole else 'a'} number")
            if (low is not None and (value <= low if above else value < low)) or (high is not None and value > high):
                span = f"more than {low}" if above else f"at least {low}" if high is None else f"{low} to {high}"
                raise InputError(f"GenerationOptions.{name} is {value!r}; give {span}")

        number("max_new_tokens", self.max_new_tokens, 1, whole=True)
        number("temperature", self.temperature, 0)
        number("top_p", self.top_p, 0, 1)
        number("top_k", self.top_k, 0, whole=True)
        number("repetition_penalty", self.repetition_penalty, 0, above=True)
        number("seed", self.seed, whole=True)
        number("presence_penalty", self.presence_penalty, -2, 2)
        number("frequency_penalty", self.frequency_penalty, -2, 2)
        number("think_budget", self.think_budget, 0, whole=True)
        number("max_context", self.max_context, 1, whole=True)
        number("logprobs", self.logprobs, 0, 20, whole=True)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    image_tokens: int  # placeholders the images / pages / video frames fill
    completion_tokens: int
    cached_tokens: int = 0  # of the prompt's, already in the KV cache from the last request (not run again)
    drafted_tokens: int = 0  # ids looked up and checked in a step with the token before them (lookup.py)
    accepted_drafts: int = 0  # of them, the ones the model drew itself: each saved a decode step
    reasoning_tokens: int = 0  # of the completion's, the thinking's (up to and with </think>)


@dataclass(frozen=True)
class Timings:
    load_s: float  # loading the weights (0 when they were already loaded)
    preprocess_s: float  # attachments and prompt
    prefill_s: float  # prompt in, first token out
    decode_tokens_per_s: float


@dataclass(frozen=True)
class Result:
    model: str
    thinking: str
    answer: str
    raw: str  # the generated text with special tokens, without the stop token
    boxes: list[Box]
    images: list[tuple[str, tuple[int, int]]]  # (source, original (width, height)) of image inputs
    usage: Usage
    timings: Timings
    finish_reason: str  # "stop" | "length"
    completion_ids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pages: list[dict] = field(default_factory=list)  # PDF pages: {"source", "page", "as", "dpi", "tokens"}
    chunks: list[dict] = field(default_factory=list)  # --map-reduce: {"pages", "notes"} per pass
    tool_calls: list[ToolCall] = field(default_factory=list)  # the answer's calls (GenerationOptions.tools)
    logprobs: list[dict] | None = None  # the answer's tokens (GenerationOptions.logprobs), OpenAI's shape

    def to_json(self) -> dict:
        return {
            "model": self.model, "thinking": self.thinking, "answer": self.answer, "raw": self.raw,
            "boxes": boxes_json(self.boxes, self.images),
            "usage": vars(self.usage),
            "timings": {k: round(v, 4) for k, v in vars(self.timings).items()},
            "finish_reason": self.finish_reason, "completion_ids": self.completion_ids, "notes": self.notes,
            "pages": self.pages, **({"chunks": self.chunks} if self.chunks else {}),
            **({"tool_calls": [c.openai() for c in self.tool_calls]} if self.tool_calls else {}),
            **({"logprobs": self.logprobs} if self.logprobs is not None else {}),
        }


@dataclass(frozen=True)
class Done:
    result: Result


Event = Progress | Note | Thinking | Answer | ToolCalled | Done


def drain(steps: Iterator):
    """Run a generator to its end, dropping what it yields (progress events); its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def collect(events: Iterable[Event]) -> Result:
    """Run an event stream to its end; the Result of its Done event."""
    result = None
    for event in events:
        if isinstance(event, Done):
            result = event.result
    if result is None:
        raise InputError("the event stream ended without a result")
    return result
