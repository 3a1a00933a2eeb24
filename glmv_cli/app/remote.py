"""`--backend openai`: the same Session / Conversation events, answered by an OpenAI-compatible server
(`glmv serve`, vLLM, SGLang) instead of a local model.

    session = RemoteSession("http://127.0.0.1:8000/v1", api_key=None, model=None)   # first served model
    for event in session.conversation().ask("What is this?", ["photo.jpg"]):          # Progress, Thinking,
        ...                                                                           # Answer, Note, Done

Attachments are prepared as for a local run (app/messages.content_parts: images as data: URIs, PDF
pages rendered to PNGs, videos as video_url) and streamed to the server. The reasoning is read from
`reasoning`, else `reasoning_content`, else from the <think>/<answer> tags in the content (through
the same StreamParser as a local run). vLLM and SGLang are asked for `skip_special_tokens: false`,
without which GLM's tags vanish from the text; extras (top_k, repetition_penalty, think_budget) go
only to servers that take them. An answer format goes as `response_format` (a JSON schema: every
such server takes it) or in the server's own field (choice, regex, grammar: vLLM's and glmv's
`structured_outputs`, SGLang's `regex` / `ebnf`). A server not ready to answer (503: its queue is
full, its model still loading; 429 with Retry-After) is asked again after the wait it asks for, for
a bounded time, each wait said as a Progress (logged while the session opens). Server errors become
one GlmvError line with the local exit codes; a connection lost in the middle of an answer says so.
"""

from __future__ import annotations

import io
import logging
import math
import re
import time
from collections.abc import Iterable, Iterator

from glmv_cli.app import loaders
from glmv_cli.app.attachments import Attachment, is_url, resolve
from glmv_cli.app.boxes import find_boxes
from glmv_cli.app.loaders import LoadOptions
from glmv_cli.app.messages import content_parts
from glmv_cli.app.session import Done, GenerationOptions, Note, Progress, Result, Timings, Usage, collect, drain
from glmv_cli.errors import GlmvError, InputError, ModelError
from glmv_cli.stream import TAGS, StreamParser

log = logging.getLogger(__name__)

TIMEOUT_S = 600.0
WAIT_S = {"model_loading": 600.0}  # how long to wait out 503s in all, by code (a 9B model loads for minutes)
BUSY_WAIT_S = 120.0  # any other 503 (a full queue), or a 429 with Retry-After
RETRY_AFTER_S = (1.0, 10.0)  # one wait's bounds (at 10 s a loading server's estimate is asked for again)
DEFAULT_RETRY_S = 5.0  # a 503 without Retry-After
TAG_SERVERS = ("vllm", "sglang")  # owned_by of servers that strip special tokens unless told not to
EXTRAS = {"glmv": ("top_k", "repetition_penalty", "think_budget"), "vllm": ("top_k", "repetition_penalty"),
          "sglang": ("top_k", "repetition_penalty")}
TEMPLATE_KWARGS = ("glmv", "vllm", "sglang")  # servers that take chat_template_kwargs
STRUCTURED_OUTPUTS = ("glmv", "vllm")  # servers that take vLLM's structured_outputs (choice, regex, grammar)


class RemoteSession:
    """A server's model: its name and kind (from GET /v1/models), and a client to ask it."""

    def __init__(self, base_url: str | None, *, api_key: str | None = None, model: str | None = None):
        from openai import OpenAI

        if not base_url:
            raise InputError("--backend openai needs the server's address: --base-url URL or GLMV_BASE_URL "
                             "(e.g. http://127.0.0.1:8000/v1)")
        self.base_url = base_url.rstrip("/")
        self.client = OpenAI(base_url=self.base_url, api_key=api_key or "none", max_retries=0, timeout=TIMEOUT_S)
        self.name, self.server = self._pick(model)
        self.loaded = True
        self.parallel = 1  # questions asked at once from threads (app/ahead.py), for the server to batch

    def _pick(self, wanted: str | None) -> tuple[str, str]:
        models = list(_logged(patiently(lambda: self.client.models.list().data, self.base_url)))
        if not models:
            raise ModelError(f"the server at {self.base_url} serves no model")
        for m in models:
            if wanted in (None, m.id):
                return m.id, str(getattr(m, "owned_by", "") or "").lower()
        names = ", ".join(m.id for m in models)
        raise ModelError(f"the server at {self.base_url} has no model {wanted!r}; it serves {names} "
                         f"(choose one with --remote-model)")

    def conversation(self, system: str | None = None) -> RemoteConversation:
        return RemoteConversation(self, system)

    def ask(self, question: str, attachments: Iterable = (), *, system: str | None = None, **kwargs):
        return self.conversation(system).ask(question, attachments, **kwargs)

    def run(self, question: str, attachments: Iterable = (), **kwargs) -> Result:
        return collect(self.ask(question, attachments, **kwargs))

    def request_extras(self, gen: GenerationOptions) -> tuple[dict, list[str]]:
        """(extra body fields this server takes, notes on options it does not)."""
        body = {"skip_special_tokens": False} if self.server in TAG_SERVERS else {}
        dropped = []
        for name in ("top_k", "repetition_penalty", "think_budget"):
            value = getattr(gen, name)
            if value is None:
                continue
            if name in EXTRAS.get(self.server, ()):
                body[name] = value
            else:
                dropped.append(f"--{name.replace('_', '-')}")
        if gen.template_kwargs:  # (--no-think: GLM-4.6V's template reads enable_thinking)
            if self.server in TEMPLATE_KWARGS:
                body["chat_template_kwargs"] = dict(gen.template_kwargs)
            else:
                dropped.append("--no-think")
        if gen.format is not None:
            fields = format_fields(gen.format, self.server)
            body.update(fields)
            if not fields:
                dropped.append({"choice": "--choice", "regex": "--regex", "grammar": "--grammar"}[gen.format.kind])
        notes = [f"{', '.join(dropped)} not sent: the server ({self.server or 'unknown'}) does not take it"] \
            if dropped else []
        return body, notes


def format_fields(fmt, server: str) -> dict:
    """The request fields that carry an answer format to `server` ({} where it takes none): a JSON
    schema as OpenAI's response_format (every such server takes it); a choice, regex or grammar as
    vLLM's and glmv's structured_outputs, or SGLang's regex / ebnf."""
    if fmt.kind == "json":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": fmt.schema}}}
    if server in STRUCTURED_OUTPUTS:
        return {"structured_outputs": {fmt.kind: fmt.choices if fmt.kind == "choice" else fmt.spec}}
    if server == "sglang":
        if fmt.kind == "grammar":
            return {"ebnf": fmt.spec}
        return {"regex": fmt.spec if fmt.kind == "regex" else "|".join(map(re.escape, fmt.choices))}
    return {}


class RemoteConversation:
    """A chat with a server: the OpenAI messages so far (answers only, no reasoning)."""

    def __init__(self, session: RemoteSession, system: str | None = None):
        self.session, self.system = session, system
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict] = [{"role": "system", "content": self.system}] if self.system else []
        self.attachments: list[list[Attachment]] = []
        self._questions: list[str] = []

    def ask(self, question: str, attachments: Iterable = (), *, load: LoadOptions | None = None,
            generation: GenerationOptions | None = None) -> Iterator:
        load, gen = load or LoadOptions(), generation or GenerationOptions()
        start = time.perf_counter()
        parts, used = yield from self._prepare(attachments, load)
        user = {"role": "user", "content": [*parts, {"type": "text", "text": question}]}
        extras, notes = self.session.request_extras(gen)
        notes += _unsent(load, gen, used)
        preprocess_s = time.perf_counter() - start
        reply, asking = Reply(), Progress(f"asking {self.session.name} at {self.session.base_url}")
        yield asking

        def send():
            reply.sent = time.perf_counter()
            return self._stream([*self.messages, user], gen, extras)

        try:
            stream = yield from patiently(send, self.session.base_url, asking)
            yield from reply.read(stream, self.session.base_url)
        finally:
            self.messages += [user, {"role": "assistant", "content": reply.answer.answer}]
            self.attachments.append(used)
            self._questions.append(question)
        notes += reply.notes()
        yield from (Note(n) for n in notes)
        yield Done(reply.result(self.session.name, used, notes, preprocess_s))

    def run(self, question: str, attachments: Iterable = (), **kwargs) -> Result:
        return collect(self.ask(question, attachments, **kwargs))

    def restore(self, question: str, attachments: Iterable, *, raw: str, answer: str,
                load: LoadOptions | None = None, generation: GenerationOptions | None = None) -> None:
        """A past turn back into the messages (`glmv ask -c`), its attachments read again and its
        answer without the reasoning (`raw` is the model's whole text); nothing is sent."""
        parts, used = drain(self._prepare(attachments, load or LoadOptions()))
        self.messages += [{"role": "user", "content": [*parts, {"type": "text", "text": question}]},
                          {"role": "assistant", "content": answer}]
        self.attachments.append(used)
        self._questions.append(question)

    def _prepare(self, attachments: Iterable, load: LoadOptions):
        parts, used = [], []
        for item in attachments:
            if isinstance(item, str) and is_url(item):
                yield Progress(f"fetching {item}")
            att = resolve(item)
            yield Progress(loaders.describe(att, load))
            parts += content_parts(att, load)
            used.append(att)
        return parts, used

    def _stream(self, messages: list[dict], gen: GenerationOptions, extras: dict):
        args = {k: v for k, v in dict(temperature=gen.temperature, top_p=gen.top_p, seed=gen.seed,
                                      max_tokens=gen.max_new_tokens, stop=list(gen.stop) or None,
                                      presence_penalty=gen.presence_penalty,
                                      frequency_penalty=gen.frequency_penalty).items()
                if v is not None}
        if gen.logprobs is not None:
            args.update(logprobs=True, top_logprobs=gen.logprobs)
        return self.session.client.chat.completions.create(
            model=self.session.name, messages=messages, stream=True, stream_options={"include_usage": True},
            extra_body=extras or None, **args)

    def transcript(self) -> str:
        """The conversation as Markdown (answers without thinking), for /save."""
        out, k = [f"# glmv chat with {self.session.name} at {self.session.base_url}\n"], 0
        if self.system:
            out.append(f"**System:** {self.system}\n")
        for m in self.messages:
            if m["role"] == "user":
                names = [a.label for a in self.attachments[k]]
                out.append("## You\n" + ("Attached: " + ", ".join(f"`{n}`" for n in names) + "\n" if names else ""))
                out.append(self._questions[k] + "\n")
                k += 1
            elif m["role"] == "assistant":
                out.append(f"## Assistant\n\n{m['content']}\n")
        return "\n".join(out)


class Reply:
    """One streamed answer: chunks -> Thinking / Answer events, and what the Result needs."""

    def __init__(self):
        self.reasoning = StreamParser()
        self.reasoning.feed("<think>")  # `reasoning` deltas are thinking: same whitespace rules
        self.answer = StreamParser()  # content: the answer, or <think>..</think><answer>.. when tagged
        self.content, self.finish, self.usage = "", None, None
        self.logprobs = None  # the content's tokens, when the server sends them (--logprobs)
        self.sent = time.perf_counter()
        self.first = self.last = None

    def read(self, stream, base_url: str) -> Iterator:
        try:
            with errors(base_url, answering=True):
                for chunk in stream:
                    yield from self._chunk(chunk)
            yield from self.reasoning.finish()
            yield from self.answer.finish()
        finally:
            stream.close()  # stopped early (Ctrl-C): the server stops generating

    def _chunk(self, chunk) -> Iterator:
        if chunk.usage:
            self.usage = chunk.usage
        if not chunk.choices:
            return
        choice, delta = chunk.choices[0], chunk.choices[0].delta
        thought = getattr(delta, "reasoning", None) or getattr(delta, "reasoning_content", None)
        if thought or delta.content:
            self.first = self.first or time.perf_counter()
            self.last = time.perf_counter()
        if thought:
            yield from self.reasoning.feed(thought)
        if delta.content:
            self.content += delta.content
            yield from self.answer.feed(delta.content)
        self.finish = choice.finish_reason or self.finish
        scores = getattr(getattr(choice, "logprobs", None), "content", None)
        if scores:  # (tags in a server's content are not the answer's tokens)
            self.logprobs = (self.logprobs or []) + [s.model_dump() for s in scores if s.token not in TAGS]

    @property
    def thinking(self) -> str:
        return self.reasoning.thinking + self.answer.thinking

    def notes(self) -> list[str]:
        if self.finish == "length":
            what = "while still thinking, so there is no answer" if not self.answer.answer else "in the answer"
            return [f"the server stopped at its token limit {what}; raise --max-new-tokens"]
        return []

    def result(self, model: str, used: list[Attachment], notes: list[str], preprocess_s: float) -> Result:
        raw = f"<think>{self.reasoning.thinking}</think>{self.content}" if self.reasoning.thinking else self.content
        prompt = self.usage.prompt_tokens if self.usage else 0
        completion = self.usage.completion_tokens if self.usage else 0
        cached = getattr(getattr(self.usage, "prompt_tokens_details", None), "cached_tokens", None) or 0
        details = getattr(self.usage, "completion_tokens_details", None)  # (vLLM, glmv: the same counts)
        accepted = getattr(details, "accepted_prediction_tokens", None) or 0
        drafted = accepted + (getattr(details, "rejected_prediction_tokens", None) or 0)
        reasoning = getattr(details, "reasoning_tokens", None) or 0
        prefill = (self.first - self.sent) if self.first else 0.0
        decode = self.last - self.first if self.first and self.last and self.last > self.first else 0.0
        rate = (completion - 1) / decode if decode and completion > 1 else 0.0
        from glmv_cli.prompt import answer_for_history

        return Result(model=model, thinking=self.thinking, answer=self.answer.answer, raw=raw,
                      boxes=find_boxes(answer_for_history(raw)), images=_image_sizes(used),
                      usage=Usage(prompt, 0, completion, cached, drafted, accepted, reasoning),
                      timings=Timings(0.0, preprocess_s, prefill, rate),
                      finish_reason=self.finish or "stop", notes=notes, logprobs=self.logprobs)


def _unsent(load: LoadOptions, gen: GenerationOptions, used: list[Attachment]) -> list[str]:
    """Options a remote server applies with its own settings: a note when the user set them."""
    kinds = {a.kind for a in used}
    names = [name for name, given in (
        ("--max-pixels", load.max_pixels is not None), ("--min-pixels", load.min_pixels is not None),
        ("--max-context", gen.max_context is not None),
        ("--fps", "video" in kinds and load.fps != LoadOptions.fps),
        ("--max-frames/--start/--end", "video" in kinds and (load.max_frames, load.start, load.end) != (None,) * 3),
    ) if given]
    return [f"{', '.join(names)} not sent: the server applies its own settings"] if names else []


def _image_sizes(used: list[Attachment]) -> list[tuple[str, tuple[int, int]]]:
    from PIL import Image

    sizes = []
    for a in used:
        if a.kind == "image":
            try:
                with Image.open(io.BytesIO(a.read_bytes())) as im:
                    sizes.append((a.label, im.size))
            except OSError:
                pass
    return sizes


def patiently(call, base_url: str, again: Progress | None = None):
    """call()'s value, asked again while the server answers 503 (its queue full, its model still
    loading) or 429 with Retry-After: after the wait it asks for (within RETRY_AFTER_S), for at most
    WAIT_S by its code in all, then its error. Before each wait a Progress says why; after it,
    `again` (what the call is doing). The openai client's errors become GlmvErrors."""
    import openai

    since: dict[str | None, float] = {}
    while True:
        try:
            return call()
        except openai.APIStatusError as e:
            code, wait = _code(e), _retry_after(e)
            left = WAIT_S.get(code, BUSY_WAIT_S) - (time.monotonic() - since.setdefault(code, time.monotonic()))
            if wait is None or left <= 0:
                raise _translate(e, base_url) from None
            wait, why = min(wait, left), _waiting(e, code)
        except openai.OpenAIError as e:
            raise _translate(e, base_url) from None
        yield Progress(f"{why}; waiting" if code == "model_loading" else f"{why}; waiting {math.ceil(wait)} s")
        time.sleep(wait)  # (Ctrl-C stops it at once)
        if again is not None:
            yield again


def _logged(steps):
    """A generator's value, its Progress messages logged (RemoteSession's constructor has no renderer)."""
    while True:
        try:
            log.warning("%s", next(steps).message)
        except StopIteration as done:
            return done.value


def _code(e) -> str | None:
    body = e.body if isinstance(getattr(e, "body", None), dict) else {}
    inner = body.get("error") if isinstance(body.get("error"), dict) else body
    return inner.get("code") if isinstance(inner.get("code"), str) else None


def _retry_after(e) -> float | None:
    """Seconds to wait before asking again, within RETRY_AFTER_S; None for an answer not to wait out."""
    header = e.response.headers.get("retry-after")
    if e.status_code != 503 and not (e.status_code == 429 and header):
        return None
    try:
        seconds = float(header)
    except (TypeError, ValueError):  # (none, or an HTTP date)
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(header).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = DEFAULT_RETRY_S
    low, high = RETRY_AFTER_S
    return min(max(seconds, low), high) if math.isfinite(seconds) else DEFAULT_RETRY_S


def _waiting(e, code: str | None) -> str:
    """Why the client waits: "the server is loading its model (40%, about 31 s left)"."""
    message = re.sub(r"[;,.]?\s*retry in \d+ s\.?$", "", _server_message(e))
    if code == "model_loading":
        how_far = re.search(r"\(([^()]*)\)", message)
        return "the server is loading its model" + (f" ({how_far[1]})" if how_far else "")
    if code == "queue_full":
        return "the server is busy (its queue is full)"
    return f"the server is busy ({message})"


class errors:
    """Context manager: the openai client's exceptions -> one GlmvError line with glmv's exit codes
    (`answering`: a connection that fails is one lost in the middle of an answer)."""

    def __init__(self, base_url: str, answering: bool = False):
        self.base_url, self.answering = base_url, answering

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        import openai

        if exc is None or not isinstance(exc, openai.OpenAIError):
            return False
        raise _translate(exc, self.base_url, self.answering) from None


def _translate(e, base_url: str, answering: bool = False) -> GlmvError:
    import openai

    if isinstance(e, openai.APIConnectionError):
        timeout = isinstance(e, openai.APITimeoutError)
        if answering and not timeout:
            return ModelError(f"the connection to the server at {base_url} was lost while it answered (it "
                              f"stopped, or the network failed); check that it runs and ask again")
        return ModelError(f"the server at {base_url} {'did not answer in time' if timeout else 'cannot be reached'}; "
                          f"start it (e.g. glmv serve) or check --base-url")
    if not isinstance(e, openai.APIStatusError):
        return GlmvError(f"the server at {base_url}: {e}")
    message = _server_message(e)
    status = e.status_code
    if status in (401, 403):
        return InputError(f"the server at {base_url} refused the request ({status}: {message}); give the right "
                          f"--api-key (or GLMV_API_KEY)")
    if status == 404:
        return ModelError(f"the server at {base_url} answered 404 ({message}); check --base-url (it ends in /v1) "
                          f"and --remote-model")
    if status in (429, 503):
        return GlmvError(f"the server at {base_url} is busy ({message}); try again shortly")
    if 400 <= status < 500:
        return InputError(f"the server refused the request: {message}")
    return GlmvError(f"the server at {base_url} failed ({status}: {message})")


def _server_message(e) -> str:
    body = e.body if isinstance(getattr(e, "body", None), dict) else {}
    inner = body.get("error", body) if isinstance(body.get("error", body), dict) else body
    text = inner.get("message") if isinstance(inner, dict) else None
    return " ".join(str(text or e.message or "no message").split())[:500]
