"""The OpenAI chat-completions wire format: the request (pydantic) and the response objects.

Standard fields: model, messages, stream, stream_options.include_usage, temperature, top_p,
max_tokens / max_completion_tokens, seed, stop, presence_penalty, frequency_penalty, logprobs,
top_logprobs, n, prediction (Predicted Outputs: drafted from, lookup.py). Documented extras (as vLLM
takes them):
top_k, repetition_penalty, think_budget (thinking tokens before the answer is forced). The
answer's format: OpenAI's `response_format` (json_object, json_schema), vLLM's `structured_outputs`
({"json" | "choice" | "regex" | "grammar": ...}) and its older `guided_json` / `guided_choice` /
`guided_regex` / `guided_grammar`. Tools: `tools`, `tool_choice`, `parallel_tool_calls` (the reply's
calls come back as `tool_calls`, finish_reason "tool_calls"). vLLM's `chat_template_kwargs` (e.g.
GLM-4.6V's {"enable_thinking": false}). Unknown fields (e.g. vLLM's skip_special_tokens) are
accepted and ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import time
import uuid

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from glmv_cli.app.answer_format import AnswerFormat
from glmv_cli.app.events import GenerationOptions, Result
from glmv_cli.app.tools import ToolCall, ToolUse
from glmv_cli.errors import InputError
from glmv_cli.text import well_formed

GUIDED = {"json": AnswerFormat.json_schema, "choice": AnswerFormat.choice, "regex": AnswerFormat.regex,
          "grammar": AnswerFormat.grammar}


class StreamOptions(BaseModel):
    include_usage: bool = False


MAX_CHOICES = 8  # n: choices of one request, each its own generation (decoded together, --parallel)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[dict] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    top_k: int | None = Field(default=None, ge=-1)  # (-1: off, as vLLM takes it)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    think_budget: int | None = Field(default=None, ge=0)
    response_format: dict | None = None
    prediction: dict | None = None  # OpenAI's Predicted Outputs (lookup.py drafts from it)
    structured_outputs: dict | None = None
    guided_json: dict | str | None = None
    guided_choice: list[str] | None = None
    guided_regex: str | None = None
    guided_grammar: str | None = None
    tools: list | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @model_validator(mode="before")
    @classmethod
    def _text(cls, body):
        return well_formed_json(body)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings")
        return stops

    def generation(self) -> GenerationOptions:
        top_k = self.top_k if self.top_k != -1 else 0
        return GenerationOptions(max_new_tokens=self.max_completion_tokens or self.max_tokens,
                                 temperature=self.temperature, top_p=self.top_p, top_k=top_k,
                                 repetition_penalty=self.repetition_penalty, seed=self.seed,
                                 presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                                 think_budget=self.think_budget, stop=tuple(self.stop or ()),
                                 format=self.answer_format(),
                                 tools=ToolUse.from_openai(self.tools, self.tool_choice, self.parallel_tool_calls),
                                 template_kwargs=dict(self.chat_template_kwargs or {}),
                                 logprobs=(self.top_logprobs or 0) if self.logprobs else None,
                                 prediction=self.predicted())

    def predicted(self) -> str | None:
        """OpenAI's Predicted Outputs: `prediction` {"type": "content", "content": text or text parts}."""
        if self.prediction is None:
            return None
        content = self.prediction.get("content")
        if self.prediction.get("type", "content") != "content" or not isinstance(content, (str, list)):
            raise InputError('prediction must be {"type": "content", "content": the text the answer is '
                             'expected to repeat}')
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise InputError('prediction content parts must be {"type": "text", "text": ...}')
            content = "".join(p["text"] for p in content)
        return content or None

    def answer_format(self) -> AnswerFormat | None:
        """The answer's format from whichever of the fields names one (an InputError: a 400)."""
        named = {}
        if self.response_format and self.response_format.get("type", "text") != "text":
            named["response_format"] = _response_format(self.response_format)
        if self.structured_outputs:
            kinds = [k for k in GUIDED if self.structured_outputs.get(k) is not None]
            if len(kinds) != 1:
                raise InputError("structured_outputs takes one of json, choice, regex or grammar")
            named["structured_outputs"] = GUIDED[kinds[0]](self.structured_outputs[kinds[0]])
        for kind, make in GUIDED.items():
            if (value := getattr(self, f"guided_{kind}")) is not None:
                named[f"guided_{kind}"] = make(value)
        if len(named) > 1:
            raise InputError(f"{' and '.join(named)} each set the answer's format; send one of them")
        return next(iter(named.values()), None)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def _response_format(rf: dict) -> AnswerFormat:
    kind = rf.get("type")
    if kind == "json_object":
        return AnswerFormat.json_schema({"type": "object"})
    if kind != "json_schema":
        raise InputError(f"response_format type {kind!r} is not one of text, json_object, json_schema")
    schema = (rf.get("json_schema") or {}).get("schema")
    if schema is None:
        raise InputError("response_format json_schema needs json_schema.schema (the JSON schema)")
    return AnswerFormat.json_schema(schema)


def well_formed_json(value):
    """A request body with every string well-formed (text.py): JSON may escape half of a surrogate
    pair (a JavaScript client that cut an emoji), which Python keeps as a lone surrogate."""
    if isinstance(value, str):
        return well_formed(value)
    if isinstance(value, list):
        return [well_formed_json(v) for v in value]
    if isinstance(value, dict):
        return {well_formed_json(k): well_formed_json(v) for k, v in value.items()}
    return value


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def usage(result: Result | None, prompt_tokens: int = 0, completion_tokens: int = 0) -> dict:
    """OpenAI's usage; prompt_tokens_details.cached_tokens: prompt tokens the KV cache already held;
    completion_tokens_details: the thinking's tokens (reasoning_tokens); of the ids drafted from
    the text so far (lookup.py, and a request's `prediction`), those the model drew itself
    (accepted) and the others (rejected), as OpenAI counts a prediction's."""
    cached = drafted = accepted = reasoning = 0
    if result is not None:
        u = result.usage
        prompt_tokens, completion_tokens, cached = u.prompt_tokens, u.completion_tokens, u.cached_tokens
        drafted, accepted, reasoning = u.drafted_tokens, u.accepted_drafts, u.reasoning_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens, "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "accepted_prediction_tokens": accepted,
                                          "rejected_prediction_tokens": drafted - accepted}}


class Ids:
    """One completion's id, creation time and model name, shared by all its chunks."""

    def __init__(self, model: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


def choice(index: int, thinking: str, answer: str, finish_reason: str, result: Result | None,
           calls: list[ToolCall] = ()) -> dict:
    message = {"role": "assistant", "content": answer or (None if calls else ""), "reasoning": thinking or None,
               "reasoning_content": thinking or None}
    if calls:
        message["tool_calls"] = [c.openai() for c in calls]
    return {"index": index, "message": message, "finish_reason": finish_reason, "logprobs": logprobs(result)}


def usage_of(results: list[Result | None]) -> dict:
    """The usage of n choices of one prompt: its tokens once (as OpenAI counts them), every choice's
    completion tokens."""
    each = [usage(r) for r in results]
    completion_tokens = sum(u["completion_tokens"] for u in each)
    details = {k: sum(u["completion_tokens_details"][k] for u in each) for k in each[0]["completion_tokens_details"]}
    return {**each[0], "completion_tokens": completion_tokens, "completion_tokens_details": details,
            "total_tokens": each[0]["prompt_tokens"] + completion_tokens}


def logprobs(result: Result | None) -> dict | None:
    """The answer's tokens with their log-probabilities, when the request asked for them (logprobs: true)."""
    return {"content": result.logprobs} if result is not None and result.logprobs is not None else None


def chunk(ids: Ids, delta: dict, finish_reason: str | None = None, logprobs: dict | None = None,
          index: int = 0) -> dict:
    return {**ids.head("chat.completion.chunk"),
            "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}]}


def usage_chunk(ids: Ids, results: list[Result | None]) -> dict:
    return {**ids.head("chat.completion.chunk"), "choices": [], "usage": usage_of(results)}


def reasoning_delta(text: str) -> dict:
    return {"reasoning": text, "reasoning_content": text}


def tool_call_delta(call: ToolCall, index: int) -> dict:
    """One whole call in one chunk (name and arguments together), as vLLM sends a call it parsed."""
    return {"tool_calls": [{"index": index, **call.openai()}]}


class StopFilter:
    """`stop` strings on the answer: text is released once no stop string can start in it; at a stop
    string the answer ends before it."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:  # what the generation still sends after a stop string
            return ""
        if not self.stops:
            return text
        self.held += text
        hits = [i for i in (self.held.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.held = self.held[:min(hits)], ""
            return out
        keep = max((k for s in self.stops for k in range(1, len(s)) if self.held.endswith(s[:k])), default=0)
        out, self.held = self.held[:len(self.held) - keep], self.held[len(self.held) - keep:]
        return out

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out
