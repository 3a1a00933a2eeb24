"""OpenAI's Responses API (POST /v1/responses) over the same model and requests as chat completions.

The request is turned into a chat-completions request (`ResponsesRequest.to_chat`): `instructions`
become the system message, `input` (a string, or items: messages with input_text / input_image /
input_file parts, earlier `function_call`s and their `function_call_output`s) become the messages,
flat function `tools` the nested ones, `text.format` the response_format, `max_output_tokens` the
max_tokens, and `reasoning.effort` "none" or "minimal" turns the thinking off. The reply is a
`response` object whose `output` holds a `reasoning` item (the thinking, as reasoning_text), a
`message` item (output_text) and one `function_call` item per call; streamed, the API's typed events
(response.created ... response.output_text.delta ... response.completed).

Responses are kept in the server's memory (stored.py) unless `store` is false, so a request may go
on from one with `previous_response_id`; the ids go away when the server restarts or the store is
full, and a client can always send the whole conversation as `input` instead.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from pydantic import BaseModel, ConfigDict, Field, model_validator

from glmv_cli.app.events import Done
from glmv_cli.app.tools import ToolCalled
from glmv_cli.errors import InputError
from glmv_cli.serve import protocol as p
from glmv_cli.serve.chat import rest
from glmv_cli.stream import Answer, Thinking

NO_THINKING = ("none", "minimal")


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str | list
    instructions: str | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_output_tokens: int | None = Field(default=None, ge=1)
    tools: list | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    text: dict | None = None
    reasoning: dict | None = None
    previous_response_id: str | None = None
    store: bool | None = None  # (OpenAI's default: true)
    metadata: dict | None = None
    include: list | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # extras, as the chat route takes them
    seed: int | None = None
    top_k: int | None = Field(default=None, ge=-1)  # (-1: off, as vLLM takes it)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    think_budget: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _text(cls, body):
        return p.well_formed_json(body)

    def input_items(self) -> list:
        """`input` as a list of items (a string is one user message)."""
        if isinstance(self.input, str):
            return [{"type": "message", "role": "user", "content": self.input}]
        return list(self.input)

    def to_chat(self, history: list = ()) -> p.ChatRequest:
        """The same request in the chat-completions shape (an InputError: a 400 naming the field);
        `history`: the items of the conversation `previous_response_id` names (stored.py)."""
        messages = [{"role": "system", "content": self.instructions}] if self.instructions else []
        messages += input_messages([*history, *self.input_items()])
        if not messages:
            raise InputError("input holds no message; send the question as a string or as a user message")
        effort = (self.reasoning or {}).get("effort")
        return p.ChatRequest(
            model=self.model, messages=messages, temperature=self.temperature, top_p=self.top_p,
            max_tokens=self.max_output_tokens, seed=self.seed, top_k=self.top_k,
            repetition_penalty=self.repetition_penalty, think_budget=self.think_budget,
            tools=[_chat_tool(t, k) for k, t in enumerate(self.tools)] if self.tools else None,
            tool_choice=_chat_tool_choice(self.tool_choice), parallel_tool_calls=self.parallel_tool_calls,
            response_format=_response_format((self.text or {}).get("format")),
            chat_template_kwargs={"enable_thinking": False} if effort in NO_THINKING else None,
            logprobs="message.output_text.logprobs" in (self.include or []), top_logprobs=self.top_logprobs)


def input_messages(items: list) -> list[dict]:
    """Responses `input` items -> chat messages; consecutive function calls join one assistant message."""
    messages: list[dict] = []
    for k, item in enumerate(items):
        where = f"input[{k}]"
        if not isinstance(item, dict):
            raise InputError(f"{where} must be an object (a message, a function_call or a function_call_output)")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            messages.append({"role": "system" if role == "developer" else role,
                             "content": _content(item.get("content"), where)})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}}
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else _content(output, where)})
        elif kind != "reasoning":  # (past reasoning is not kept in the prompt, as in chat)
            raise InputError(f"{where}.type {kind!r} is not one of message, function_call, function_call_output, "
                             f"reasoning")
    return messages


def _content(content, where: str):
    """Responses content parts -> chat content parts."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InputError(f"{where}.content must be a string or a list of parts")
    out = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            out.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "refusal":
            out.append({"type": "text", "text": part.get("refusal") or ""})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise InputError(f"{where}.content[{j}]: input_image needs image_url (a data: or http(s) URL); "
                                 f"file_id is not supported")
            out.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "input_file":
            out.append({"type": "file", "file": {"file_data": part.get("file_data"),
                                                 "filename": part.get("filename")}})
        else:
            raise InputError(f"{where}.content[{j}]: unsupported part type {kind!r}; use input_text, input_image "
                             f"or input_file")
    return out


def _chat_tool(tool, k: int) -> dict:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else tool
        raise InputError(f"tools[{k}] is a {kind!r} tool; glmv runs function tools only")
    return {"type": "function", "function": {n: tool[n] for n in ("name", "description", "parameters") if n in tool}}


def _chat_tool_choice(choice):
    if isinstance(choice, dict) and choice.get("type") == "function" and "function" not in choice:
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(fmt) -> dict | None:
    if fmt is not None and not isinstance(fmt, dict):
        raise InputError('text.format must be an object: {"type": "text" | "json_object" | "json_schema", ...}')
    if not fmt or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": fmt.get("name"), "schema": fmt.get("schema")}}
    return fmt


# -- the response object ------------------------------------------------------------------------------

class Shape:
    """One response's id, creation time and the request fields a response echoes."""

    def __init__(self, request: ResponsesRequest, model: str):
        self.id, self.created = _id("resp"), int(time.time())
        self.request, self.model = request, model

    def response(self, status: str, output: list, result=None) -> dict:
        r = self.request
        usage = None
        if result is not None:
            u = result.usage
            usage = {"input_tokens": u.prompt_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens},
                     "output_tokens": u.completion_tokens,
                     "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
                     "total_tokens": u.prompt_tokens + u.completion_tokens}
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": r.instructions, "max_output_tokens": r.max_output_tokens, "model": self.model,
            "output": output, "parallel_tool_calls": r.parallel_tool_calls is not False,
            "previous_response_id": r.previous_response_id,
            "reasoning": {"effort": (r.reasoning or {}).get("effort"), "summary": None}, "store": r.store is not False,
            "temperature": r.temperature, "text": r.text or {"format": {"type": "text"}},
            "tool_choice": r.tool_choice or "auto", "tools": r.tools or [], "top_p": r.top_p,
            "truncation": "disabled", "usage": usage, "metadata": r.metadata or {},
        }


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict:
    return {"type": "reasoning", "id": item_id, "summary": [], "status": status,
            "content": [{"type": "reasoning_text", "text": text}] if text else []}


def message_item(item_id: str, text: str | None, status: str = "completed", logprobs: list | None = None) -> dict:
    content = [] if text is None else [_text_part(text, logprobs)]
    return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": content}


def call_item(item_id: str, call, status: str = "completed", arguments: str | None = None) -> dict:
    openai = call.openai()
    return {"type": "function_call", "id": item_id, "call_id": call.id, "name": call.name, "status": status,
            "arguments": openai["function"]["arguments"] if arguments is None else arguments}


def complete(reply, request: ResponsesRequest, model: str) -> dict:
    """A gathered chat.Reply as one response object."""
    output = []
    if reply.thinking:
        output.append(reasoning_item(_id("rs"), reply.thinking))
    if reply.answer or not reply.calls:
        output.append(message_item(_id("msg"), reply.answer, logprobs=getattr(reply.result, "logprobs", None)))
    output += [call_item(_id("fc"), c) for c in reply.calls]
    status = "incomplete" if reply.finish_reason == "length" else "completed"
    return Shape(request, model).response(status, output, reply.result)


# -- streamed -----------------------------------------------------------------------------------------

class Events:
    """The typed events of one streamed response, each with its sequence number, as SSE lines."""

    def __init__(self, shape: Shape):
        self.shape, self.seq, self.output = shape, 0, []
        self.open: dict | None = None  # the reasoning or message item being written: its item and text
        self.logprobs: list | None = None  # the answer's tokens (include: message.output_text.logprobs)

    def sse(self, kind: str, **fields) -> str:
        body = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return f"event: {kind}\ndata: {json.dumps(body, ensure_ascii=False)}\n\n"

    def text(self, kind: str, delta: str) -> list[str]:
        """A piece of thinking ("reasoning") or answer ("message"), opening its item if needed."""
        out = []
        if self.open is None or self.open["item"]["type"] != kind:
            out += self.close()
            index, item_id = len(self.output), _id("rs" if kind == "reasoning" else "msg")
            item = reasoning_item(item_id, "", "in_progress") if kind == "reasoning" else \
                message_item(item_id, None, "in_progress")
            self.open = {"item": item, "index": index, "text": ""}
            self.output.append(None)
            out.append(self.sse("response.output_item.added", output_index=index, item=item))
            if kind == "message":
                out.append(self.sse("response.content_part.added", item_id=item_id, output_index=index,
                                    content_index=0, part=_text_part("")))
        o = self.open
        o["text"] += delta
        where = dict(item_id=o["item"]["id"], output_index=o["index"], content_index=0, delta=delta)
        if kind == "message":
            out.append(self.sse("response.output_text.delta", **where, logprobs=[]))
        else:
            out.append(self.sse("response.reasoning_text.delta", **where))
        return out

    def logprobs_from(self, result):
        """The Result; its answer's logprobs go into the message item when it is closed."""
        self.logprobs = result.logprobs
        return result

    @property
    def answered(self) -> bool:
        """A message or a function call is among the items."""
        kinds = [i["type"] for i in self.output if i] + ([self.open["item"]["type"]] if self.open else [])
        return "message" in kinds or "function_call" in kinds

    def close(self) -> list[str]:
        """The item being written is done."""
        o, self.open = self.open, None
        if o is None:
            return []
        item_id, index, text = o["item"]["id"], o["index"], o["text"]
        where = dict(item_id=item_id, output_index=index, content_index=0)
        if o["item"]["type"] == "message":
            item = message_item(item_id, text, logprobs=self.logprobs)
            out = [self.sse("response.output_text.done", **where, text=text, logprobs=self.logprobs or []),
                   self.sse("response.content_part.done", **where, part=_text_part(text, self.logprobs))]
        else:
            item = reasoning_item(item_id, text)
            out = [self.sse("response.reasoning_text.done", **where, text=text)]
        self.output[index] = item
        return [*out, self.sse("response.output_item.done", output_index=index, item=item)]

    def call(self, call) -> list[str]:
        out = self.close()
        index, item_id = len(self.output), _id("fc")
        done = call_item(item_id, call)
        self.output.append(done)
        where = dict(item_id=item_id, output_index=index)
        return [*out, self.sse("response.output_item.added", output_index=index,
                               item=call_item(item_id, call, "in_progress", "")),
                self.sse("response.function_call_arguments.delta", **where, delta=done["arguments"]),
                self.sse("response.function_call_arguments.done", **where, arguments=done["arguments"],
                         name=call.name),
                self.sse("response.output_item.done", output_index=index, item=done)]


def _text_part(text: str, logprobs: list | None = None) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


async def stream(job, head: list, request: ResponsesRequest, model: str,
                 note=lambda **fields: None, done=lambda response: None) -> AsyncIterator[str]:
    """response.created, in_progress, the items' events as the reply is generated, then
    response.completed (or response.incomplete when max_output_tokens cut it). `note` is told the
    result (and an error) for the request's log line, `done` the final response (to store it)."""
    events, result = Events(Shape(request, model)), None
    try:
        started = events.shape.response("in_progress", [])
        yield events.sse("response.created", response=started)
        yield events.sse("response.in_progress", response=started)
        async for event in rest(job, head):
            if isinstance(event, Thinking):
                lines = events.text("reasoning", event.text)
            elif isinstance(event, Answer):
                lines = events.text("message", event.text)
            elif isinstance(event, ToolCalled):
                lines = events.call(event.call)
            else:
                lines = []
                if isinstance(event, Done):
                    result = events.logprobs_from(event.result)
            for line in lines:
                yield line
        if not events.answered:
            for line in events.text("message", ""):  # (a reply without calls has its message, even empty)
                yield line
        for line in events.close():
            yield line
        status = "incomplete" if result is not None and result.finish_reason == "length" else "completed"
        final = events.shape.response(status, events.output, result)
        done(final)
        yield events.sse(f"response.{status}", response=final)
    except Exception as e:  # noqa: BLE001  (mid-stream: the status line is sent; say it in the stream)
        from glmv_cli.serve.errors import describe

        status, message, kind, code = describe(e)
        note(error=message)
        yield events.sse("error", code=code or kind, message=message, param=None)
    finally:
        note(results=[result])
        job.cancel()
