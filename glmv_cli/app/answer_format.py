"""Answers in a required format: JSON matching a schema, one of a list of choices, a regular
expression or a grammar (`--schema`, `--choice`, `--regex`; a server's `response_format`).

The model thinks as it likes; from the first token of its answer on, each token is drawn only from
those that keep the answer in the format, so a JSON answer always parses and names the schema's
fields. llguidance (the structured-output engine vLLM, SGLang and llama.cpp use) computes that set
from the grammar and the tokenizer's vocabulary at each step, in well under a millisecond.

Around the format, the steps of GLM-4.1V-Thinking's reply (`<think>...</think><answer>A</answer>`):

    start --<think>--> thinking (free) --</think>--> after --<answer>--> answer (the format) --</answer>--> done
      |                                                  |                                    (then only a stop id)
      +------ a first token of the format (a model that answers without tags) ---------> answer, ended by a stop id

GLM-4.6V answers without <answer> tags, straight after </think> (PromptConfig.answer_tags): there
the answer starts at the first token after the thinking and ends on a stop id.

JSON is written compactly, as `json.dumps` writes it (`{"a": 1, "b": [2, 3]}`): no free whitespace,
which a weak model could otherwise fill until it runs out of tokens (a schema's own "x-guidance"
options override that). An object that lists its properties gets no others unless the schema says
`additionalProperties` (closed_objects). The format is not shown to the model: say in the question
what you want.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from glmv_cli.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from glmv_cli.tokenizer import Tokenizer

Kind = Literal["json", "choice", "regex", "grammar"]
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
WHAT = {"json": "JSON schema", "choice": "choices", "regex": "regular expression", "grammar": "grammar"}


@dataclass(frozen=True)
class AnswerFormat:
    """What the answer must be. `spec`: the schema as JSON text, the choices as a JSON list, the
    regex, or the grammar (Lark, or llama.cpp's GBNF)."""

    kind: Kind
    spec: str

    @classmethod
    def json_schema(cls, schema: dict | bool | str) -> AnswerFormat:
        """A JSON schema (a dict, or its JSON text); {} allows any JSON, {"type": "object"} any object."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise InputError(f"the JSON schema is not valid JSON ({e.msg} at line {e.lineno} column "
                                 f"{e.colno})") from None
        if schema is True:
            schema = {}
        if not isinstance(schema, dict):
            raise InputError(f"a JSON schema is a JSON object, not {type(schema).__name__}")
        return cls("json", json.dumps(closed_objects(schema)))

    @classmethod
    def choice(cls, options) -> AnswerFormat:
        """The answer is exactly one of `options` (strings)."""
        options = list(options)
        if not options or not all(isinstance(o, str) and o for o in options):
            raise InputError("choices are one or more non-empty strings")
        return cls("choice", json.dumps(options))

    @classmethod
    def regex(cls, pattern: str) -> AnswerFormat:
        """The whole answer matches `pattern` (Rust's regex syntax, as Python's without look-arounds)."""
        if not isinstance(pattern, str) or not pattern:
            raise InputError("a regular expression for the answer is a non-empty string")
        return cls("regex", pattern)

    @classmethod
    def grammar(cls, text: str) -> AnswerFormat:
        """A Lark grammar (llguidance's dialect) or llama.cpp's GBNF."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("a grammar for the answer is non-empty text (Lark or GBNF)")
        return cls("grammar", text)

    @property
    def schema(self) -> dict | None:
        return json.loads(self.spec) if self.kind == "json" else None

    @property
    def choices(self) -> list[str] | None:
        return json.loads(self.spec) if self.kind == "choice" else None

    def grammar_text(self) -> str:
        """The format as an llguidance grammar."""
        import llguidance

        if self.kind == "json":
            return llguidance.LLMatcher.grammar_from_json_schema(self.spec, defaults=JSON_STYLE)
        return llguidance.grammar_from({"choice": "choice", "regex": "regex", "grammar": "grammar"}[self.kind],
                                       self.spec)

    def matcher(self, tokenizer: Tokenizer):
        """A fresh llguidance matcher of this format over `tokenizer`; an InputError naming what is
        wrong with the format when it does not compile."""
        import llguidance

        try:
            grammar = self.grammar_text()
        except ValueError as e:  # (GBNF that does not convert)
            raise InputError(f"the {WHAT[self.kind]} is not valid: {one_line(str(e))}") from None
        m = llguidance.LLMatcher(_ll_tokenizer(tokenizer), grammar, log_level=0)
        if m.is_error():
            raise InputError(f"the {WHAT[self.kind]} is not valid: {one_line(m.get_error())}")
        return m


DATA_KEYWORDS = ("enum", "const", "default", "examples")  # their values are data, not schemas


def closed_objects(schema):
    """The schema with `"additionalProperties": false` on every object that lists its properties and
    says nothing of others: keys beyond the listed ones are what a model fills with anything (JSON
    Schema allows them by default). vLLM's xgrammar does the same in its default strict mode."""
    if isinstance(schema, list):
        return [closed_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (v if k in DATA_KEYWORDS else closed_objects(v)) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and "unevaluatedProperties" not in out:
        out["additionalProperties"] = False
    return out


def one_line(message: str, limit: int = 300) -> str:
    """llguidance's multi-line messages (a caret under the spot) as one line."""
    lines = (line.strip() for line in message.splitlines())
    text = " ".join(line for line in lines if line and set(line) != {"^"})
    return text if len(text) <= limit else text[: limit - 3] + "..."


_LL_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def eos_stand_in(tokenizer: Tokenizer) -> int:
    """The special token llguidance is told ends a sequence. AnswerSteering never offers it for
    that: where the answer ends (</answer> or the model's stop ids) is decided there."""
    for name in ("<|endoftext|>", "</answer>"):
        if (token := tokenizer.token_id(name)) is not None:
            return token
    return tokenizer.vocab_size - 1


def _ll_tokenizer(tokenizer: Tokenizer):
    """llguidance's view of a tokenizer, built once per Tokenizer (about a second for GLM's 151k ids)."""
    import llguidance

    if tokenizer not in _LL_TOKENIZERS:
        _LL_TOKENIZERS[tokenizer] = llguidance.LLTokenizer(tokenizer.backend_json(), eos_token=eos_stand_in(tokenizer))
    return _LL_TOKENIZERS[tokenizer]


class AnswerSteering:
    """One generation's steps (see the module's diagram): `allowed()` the ids the next token may
    be (None: any), `feed(id)` each token that joins the sequence, drawn or forced."""

    def __init__(self, fmt: AnswerFormat, tokenizer: Tokenizer, stop_ids: tuple[int, ...], vocab_size: int,
                 answer_tags: bool = True):
        self.format, self.matcher = fmt, fmt.matcher(tokenizer)
        ids = {t: tokenizer.token_id(t) for t in ("<think>", "</think>", "<answer>", "</answer>")}
        self.think, self.end_think = ids["<think>"], ids["</think>"]
        # GLM-4.6V answers straight after </think>, without <answer> tags (PromptConfig.answer_tags)
        self.open, self.close = (ids["<answer>"], ids["</answer>"]) if answer_tags else (None, None)
        self.stop_ids, self.vocab_size, self.eos = tuple(stop_ids), vocab_size, eos_stand_in(tokenizer)
        self.step = "start"
        self.tagged = False  # the answer opened with <answer>: </answer> ends it, else a stop id
        self.thought = False  # the thinking is over

    @property
    def complete(self) -> bool:
        """The answer so far is a whole answer in the format."""
        return self.step == "done" or (self.step == "answer" and self.matcher.is_accepting())

    def allowed(self) -> np.ndarray | None:
        """(vocab_size,) bool: the ids the next token may be; None while the model thinks."""
        import numpy as np

        if self.step == "thinking":
            return None
        mask = np.zeros(self.vocab_size, dtype=bool)
        if self.step == "done":
            mask[list(self.stop_ids)] = True
            return mask
        if self.step == "after":  # </think> was written: the answer opens next
            mask[self.open] = True
            return mask
        if not self.matcher.is_stopped():
            bits = np.unpackbits(np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
            n = min(len(bits), self.vocab_size)
            mask[:n] = bits[:n].astype(bool)
            mask[self.eos] = False  # (llguidance's own end of sequence: see _ll_tokenizer)
        ends = [self.close] if self.tagged else list(self.stop_ids)
        if self.step == "start":  # the thinking or the answer may open here too
            opening = (self.open,) if self.thought else (self.think, self.open)
            mask[[t for t in opening if t is not None]] = True
        if self.matcher.is_accepting():
            mask[ends] = True
        if not mask.any():
            raise InputError(f"no token of this tokenizer can continue the answer in the {WHAT[self.format.kind]}")
        return mask

    def feed(self, token: int) -> None:
        step = self.step
        if step == "thinking":
            if token == self.end_think:  # (a tokenizer without <answer>: the answer comes untagged)
                self.step, self.thought = ("after" if self.open is not None else "start"), True
            elif token == self.open:  # (an answer opened without closing the thought: parsed as the answer)
                self.step, self.tagged, self.thought = "answer", True, True
        elif step == "start" and token == self.think and not self.thought:
            self.step = "thinking"
        elif step in ("start", "after") and token == self.open:
            self.step, self.tagged = "answer", True
        elif step == "answer" and self.tagged and token == self.close:
            self.step = "done"
        elif step in ("start", "answer") and token not in self.stop_ids:
            self.step = "answer"
            if not self.matcher.consume_token(token):
                raise InputError(f"the answer left its {WHAT[self.format.kind]}: "
                                 f"{one_line(self.matcher.get_error())}")

    def mask(self, device: torch.device | str) -> torch.Tensor | None:
        """allowed() as a (1, vocab_size) bool tensor on `device` (for generate.Generation)."""
        import torch

        mask = self.allowed()
        return None if mask is None else torch.from_numpy(mask).to(device).unsqueeze(0)
