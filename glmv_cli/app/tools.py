"""Tool calls (OpenAI's `tools`): the functions shown to the model, and the calls in its reply.

GLM-4.6V (and GLM-4.5V, vLLM's and SGLang's `glm45` parser) calls a function by writing, in its
answer after the thinking:

    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Paris</arg_value>
    <arg_key>days</arg_key>
    <arg_value>3</arg_value>
    </tool_call>

string arguments as they are, every other value as JSON; several calls follow one another. The
checkpoint's chat template shows the tools to the model (its `tools` variable) and writes earlier
calls and their results (`tool` messages) back into the prompt; a template without `tools` (GLM-4.1V)
belongs to a model that was not trained to call any.

`tool_choice`: "auto" (the model decides; its calls are read from the answer), "none" (no tools
are shown), "required" or one function's name: then the answer is held, token by token, to that
format (an llguidance grammar, as `--schema` holds JSON), each argument to its JSON schema.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from glmv_cli.app.answer_format import JSON_STYLE, closed_objects
from glmv_cli.errors import InputError

OPEN, CLOSE = "<tool_call>", "</tool_call>"
KEY, END_KEY, VALUE, END_VALUE = "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"
MARKERS = (OPEN, CLOSE, KEY, END_KEY, VALUE, END_VALUE)
NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # OpenAI's rule for function names
_CALL = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.DOTALL)
_ARG = re.compile(re.escape(KEY) + r"(.*?)" + re.escape(END_KEY) + r"\s*" + re.escape(VALUE) + r"(.*?)"
                  + re.escape(END_VALUE), re.DOTALL)


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, and the JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict = field(default_factory=lambda: {"type": "object", "properties": {}})

    def openai(self) -> dict:
        """As OpenAI's `tools` list holds it (what chat templates iterate over)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    def is_text(self, key: str) -> bool:
        """The argument `key` is written as plain text (a string), not as JSON."""
        return is_text(((self.parameters or {}).get("properties") or {}).get(key))


@dataclass(frozen=True)
class ToolCall:
    """One call in the model's reply: an id for the tool's result to name, the function, its arguments."""

    name: str
    arguments: dict
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def openai(self) -> dict:
        """As OpenAI's `tool_calls` hold it: the arguments as a JSON string."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}

    def template(self) -> dict:
        """As chat templates read a past call: the arguments as a mapping (`tc.arguments.items()`)."""
        return {"id": self.id, "type": "function", "name": self.name, "arguments": self.arguments,
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ToolUse:
    """The tools of one request and how the model may use them: `choice` "auto", "required", or the
    name of the one function it must call; `parallel`: more than one call in a reply."""

    tools: tuple[Tool, ...]
    choice: str = "auto"
    parallel: bool = True

    @classmethod
    def from_openai(cls, tools, tool_choice=None, parallel_tool_calls=None) -> ToolUse | None:
        """OpenAI's request fields -> a ToolUse, or None when no tool may be called; an InputError
        naming the field for anything malformed."""
        if tools is None or tools == []:
            if tool_choice not in (None, "none", "auto"):
                raise InputError("tool_choice names a tool, but the request has no tools")
            return None
        if not isinstance(tools, list):
            raise InputError("tools must be a list of {\"type\": \"function\", \"function\": {...}}")
        parsed = tuple(_tool(t, f"tools[{k}]") for k, t in enumerate(tools))
        names = [t.name for t in parsed]
        if len(set(names)) != len(names):
            raise InputError(f"tools names a function twice: {sorted({n for n in names if names.count(n) > 1})}")
        choice = _choice(tool_choice, names)
        if choice == "none":
            return None
        return cls(parsed, choice, parallel_tool_calls is not False)

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)

    def templated(self) -> list[dict]:
        return [t.openai() for t in self.tools]

    @property
    def held(self) -> bool:
        """The answer is held to tool calls (tool_choice "required" or a function's name)."""
        return self.choice != "auto"

    def format(self, tokenizer):
        """The answer held to the calls tool_choice requires, as an AnswerFormat (checked: a tool
        whose parameters do not compile is an InputError naming llguidance's complaint)."""
        from glmv_cli.app.answer_format import AnswerFormat

        fmt = AnswerFormat.grammar(self.grammar(tokenizer.added & set(MARKERS)))
        try:
            fmt.matcher(tokenizer)
        except InputError as e:
            why = re.split(r" \d+ \| ", str(e).removeprefix("the grammar is not valid: "))[0]  # (no grammar lines)
            why = re.sub(r"^at \d+\(\d+\): ", "", why)
            raise InputError(f"the tools' parameters cannot hold a call ({why}); fix their JSON schemas or "
                             f"send tool_choice auto") from None
        return fmt

    def grammar(self, added: set[str]) -> str:
        """The answer as calls of the chosen tools, as an llguidance Lark grammar. `added`: which
        markers are single tokens of the tokenizer (llguidance names those `<like_this>`)."""
        tools = self.tools if self.choice == "required" else (self.tool(self.choice),)
        mark = {m: (m if m in added else json.dumps(m)) for m in MARKERS}
        many = "+" if self.parallel and self.choice == "required" else ""
        lines = [f"start: call{many}", "call: " + " | ".join(f"call_{k}" for k in range(len(tools)))]
        for k, tool in enumerate(tools):
            lines += _call_rules(k, tool, mark)
        if END_VALUE in added:  # free text, then the </arg_value> token
            lines += ["text: /(?s:.*)/", f"text_value: text {mark[END_VALUE]}"]
        else:  # the shortest text that ends in </arg_value>
            lines += [r"text_value[lazy]: /(?s:.*)<\/arg_value>/"]
        return "\n".join(lines) + "\n"


def _call_rules(k: int, tool: Tool, mark: dict) -> list[str]:
    """call_k: one call of `tool`, its arguments in the schema's order (the required ones always)."""
    params = tool.parameters or {}
    props = params.get("properties") or {}
    required = set(params.get("required") or ())
    nl = '"\\n"?'
    args, rules = [], []
    for j, (key, schema) in enumerate(props.items()):
        rules.append(f"arg_{k}_{j}: {mark[KEY]} {json.dumps(key, ensure_ascii=False)} {mark[END_KEY]} {nl} "
                     f"{mark[VALUE]} {_value(schema, mark)} {nl}")
        args.append(f"arg_{k}_{j}" + ("" if key in required else "?"))
    if not props and params.get("additionalProperties", True) is not False:  # any arguments, as text
        rules.append(f"arg_{k}_any: {mark[KEY]} /[A-Za-z0-9_.\\-]+/ {mark[END_KEY]} {nl} {mark[VALUE]} "
                     f"text_value {nl}")
        args.append(f"arg_{k}_any*")
    head = f"call_{k}: {nl} {mark[OPEN]} {json.dumps(tool.name)} {nl} {' '.join(args)} {mark[CLOSE]}"
    return [head, *rules]


def _value(schema, mark: dict) -> str:
    """One argument's value up to and with </arg_value>: text (one of a string enum's values, or any
    text), else JSON of its schema."""
    if not is_text(schema):
        schema = {**_closed(schema), "x-guidance": JSON_STYLE}  # compact JSON, as answer formats write it
        return f"%json {json.dumps(schema, ensure_ascii=False)} {mark[END_VALUE]}"
    options = [o for o in schema.get("enum") or () if isinstance(o, str)]
    if isinstance(schema.get("const"), str):
        options = [schema["const"]]
    if options:
        return "(" + " | ".join(json.dumps(o, ensure_ascii=False) for o in options) + f") {mark[END_VALUE]}"
    low, high = schema.get("minLength"), schema.get("maxLength")
    if not isinstance(low, int) and not isinstance(high, int):
        return "text_value"
    chars = f"(?s:.){{{max(low or 0, 0)},{high if isinstance(high, int) else ''}}}"
    if mark[END_VALUE].startswith('"'):  # (a text marker: the shortest text that ends in it)
        return f"/{chars}" + r"<\/arg_value>/"
    return f"/{chars}/ {mark[END_VALUE]}"


def _closed(schema) -> dict:
    return closed_objects(schema if isinstance(schema, dict) else {})


def is_text(schema) -> bool:
    """GLM writes a value of this schema as plain text: a string (or a string enum / const)."""
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    if kind == "string" or (isinstance(kind, list) and "string" in kind):
        return True
    values = schema.get("enum") or ([schema["const"]] if "const" in schema else [])
    return kind is None and bool(values) and all(isinstance(v, str) for v in values)


def _tool(item, where: str) -> Tool:
    fn = item.get("function") if isinstance(item, dict) else None
    if not isinstance(item, dict) or item.get("type", "function") != "function" or not isinstance(fn, dict):
        raise InputError(f"{where} must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                         f"\"parameters\": ...}}}}")
    name = fn.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InputError(f"{where}.function.name must be 1-64 letters, digits, '_', '.' or '-', got {name!r}")
    params = fn.get("parameters")
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, dict):
        raise InputError(f"{where}.function.parameters must be a JSON schema object")
    if not isinstance(params.get("properties", {}), dict) or not isinstance(params.get("required", []), list):
        raise InputError(f"{where}.function.parameters: properties must be an object and required a list")
    return Tool(name, str(fn.get("description") or ""), params)


def _choice(choice, names: list[str]) -> str:
    if choice is None:
        return "auto"
    if choice in ("none", "auto", "required"):
        return choice
    fn = choice.get("function") if isinstance(choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise InputError("tool_choice is \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
                         "\"function\": {\"name\": ...}}")
    if name not in names:
        raise InputError(f"tool_choice names {name!r}, which is not among the tools ({', '.join(names)})")
    return name


# -- the reply ---------------------------------------------------------------------------------------

def parse_call(body: str, use: ToolUse | None = None) -> ToolCall:
    """The inside of one <tool_call>..</tool_call> -> a ToolCall; each value is text where the tool's
    schema says string, else JSON when it parses as JSON, else the text."""
    name = body.split(KEY, 1)[0].strip()
    tool = use.tool(name) if use else None
    args = {}
    for key, value in _ARG.findall(body):
        key = key.strip()
        if tool is not None and tool.is_text(key):
            args[key] = value
            continue
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    return ToolCall(name, args)


def split_calls(answer: str, use: ToolUse | None = None) -> tuple[str, list[ToolCall]]:
    """A whole answer -> (its text without the calls, the calls)."""
    calls = [parse_call(body, use) for body in _CALL.findall(answer)]
    return _CALL.sub("", answer).strip(), calls


class CallSplitter:
    """Answer text in (as it streams), out: the text that is not a call, and each call once it is
    complete. Text that may be the start of `<tool_call>` is held until it is decided, and so is
    whitespace before a call."""

    def __init__(self, use: ToolUse):
        self.use, self.calls, self.text = use, [], ""
        self._buf, self._in_call = "", False
        self._gap = ""  # the whitespace before the open call (text again if the call never closes)

    def feed(self, delta: str) -> list[str | ToolCall]:
        self._buf += delta
        out: list[str | ToolCall] = []
        while True:
            if self._in_call:
                end = self._buf.find(CLOSE)
                if end < 0:
                    return out
                call = parse_call(self._buf[:end], self.use)
                self.calls.append(call)
                out.append(call)
                self._buf, self._in_call = self._buf[end + len(CLOSE):], False
                continue
            start = self._buf.find(OPEN)
            if start >= 0:
                body = self._buf[:start].rstrip()
                self._emit(body, out)
                self._gap = self._buf[len(body):start]
                self._buf, self._in_call = self._buf[start + len(OPEN):], True
                continue
            keep = next((k for k in range(min(len(OPEN) - 1, len(self._buf)), 0, -1)
                         if OPEN.startswith(self._buf[-k:])), 0)
            head, tail = self._buf[:len(self._buf) - keep], self._buf[len(self._buf) - keep:]
            body = head.rstrip()
            self._emit(body, out)
            self._buf = head[len(body):] + tail  # trailing whitespace waits: a call may follow
            return out

    def finish(self) -> list[str]:
        """The end of the answer: an unfinished call is kept as text (nothing is lost)."""
        rest = ((self._gap + OPEN if self._in_call else "") + self._buf).rstrip()
        self._buf, self._in_call = "", False
        out: list[str | ToolCall] = []
        self._emit(rest, out)
        return out

    def _emit(self, text: str, out: list) -> None:
        if text:
            if not self.text:
                text = text.lstrip()
            self.text += text
            if text:
                out.append(text)


def strip_calls(text: str) -> str:
    """`text` without its <tool_call>..</tool_call> blocks (what stays of a reply in the history
    beside its calls)."""
    return _CALL.sub("", text)


@dataclass(frozen=True)
class ToolCalled:
    """The model called a function (an event between the answer's pieces; Result.tool_calls has all)."""

    call: ToolCall


def split_events(events, splitter: CallSplitter):
    """A session's events with each Answer's text passed through `splitter`: Answer events for the
    text outside calls, a ToolCalled for each complete call. Returns what `events` returns."""
    from glmv_cli.stream import Answer

    try:
        while True:
            try:
                event = next(events)
            except StopIteration as end:
                yield from _as_events(splitter.finish(), False)
                return end.value
            if isinstance(event, Answer):
                yield from _as_events(splitter.feed(event.text), event.boxed)
            else:
                yield event
    finally:
        events.close()


def _as_events(pieces: list, boxed: bool):
    from glmv_cli.stream import Answer

    for piece in pieces:
        yield ToolCalled(piece) if isinstance(piece, ToolCall) else Answer(piece, boxed=boxed)
