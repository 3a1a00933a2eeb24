"""The session: load a checkpoint once, ask many times, get a stream of typed events.

    from glmv_cli import Session, Thinking, Answer, Done
    session = Session("zai-org/GLM-4.1V-9B-Thinking")          # tokenizer + configs; weights on first ask
    for event in session.ask("What is in this picture?", ["photo.jpg"]):
        match event:
            case Thinking(text): ...                             # reasoning, as it is generated
            case Answer(text): ...                               # the answer, box markers removed
            case Done(result): print(result.usage)               # everything, see Result
    chat = session.conversation(system="Be brief.")              # multi-turn: history is kept
    result = chat.run("And the colour?")                         # the same, collected

Events in order: Progress (fetching, reading, rendering, decoding, loading weights, reading the
prompt; the last two with a Meter of how far they have come, app/meter.py), Note (something the
user should know: a PDF rendered at a lower DPI, an answer cut by max_new_tokens), then Thinking /
Answer (and ToolCalled, with GenerationOptions.tools) as generated, then one Done. Attachments are
loaded and the prompt is checked against the context before the weights are loaded, so bad input
fails fast.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from glmv_cli.app import loaders
from glmv_cli.app.answer_format import AnswerFormat
from glmv_cli.app.attachments import Attachment, is_one, is_url, resolve
from glmv_cli.app.boxes import find_boxes
from glmv_cli.app.events import (  # noqa: F401  (the session's types, importable from here as before)
    Done,
    Event,
    GenerationOptions,
    Note,
    Progress,
    Result,
    Timings,
    Usage,
    collect,
    drain,
)
from glmv_cli.app.loaders import LoadOptions
from glmv_cli.app.messages import TextPart
from glmv_cli.app.meter import Meter
from glmv_cli.app.tools import CallSplitter, split_calls, split_events, strip_calls
from glmv_cli.errors import ContextFull, InputError
from glmv_cli.inputs.visual import VisualInput
from glmv_cli.stream import StreamParser

# torch-importing modules (prompt, decode, api) are imported where they are used, so that the CLI's
# --help and shell completion stay fast.

PROMPT_OOM_ADVICE = ("send less: smaller images (--max-pixels), fewer pages (--pages) or frames (--max-frames), "
                     "a shorter context (--max-context) or answer (--max-new-tokens); or load the weights with "
                     "--quantize int8 or int4 to leave more room")
DEFAULT_MAX_NEW_TOKENS = 8192  # thinking models need room; capped by what the context leaves
PROMPT_OVERHEAD = 64  # template tokens around a turn, for the PDF page budget


class Session:
    """A checkpoint's tokenizer, prompt format and patch sizes (read at once, cheap) and its
    weights (loaded on the first question, or by `load()`)."""

    def __init__(self, model: str | os.PathLike | None = None, *, device: str = "auto", dtype: str = "auto",
                 quantize: str | None = None, compile: bool = False, parallel: int = 1):
        """`parallel` > 1: questions asked on several threads at once (glmv serve's workers) decode
        together, up to that many per step (batching.py); each thread asks in its own Conversation."""
        from glmv_cli.api import generation_defaults
        from glmv_cli.inputs.patches import load_patch_specs
        from glmv_cli.loading import DEFAULT_REPO, check_device, resolve_checkpoint
        from glmv_cli.model.config import Glm4vConfig
        from glmv_cli.prompt import PromptConfig
        from glmv_cli.tokenizer import Tokenizer

        check_device(device)
        self.name = str(model or os.environ.get("GLMV_MODEL") or DEFAULT_REPO)
        self.folder = resolve_checkpoint(self.name)
        self.config = Glm4vConfig.from_folder(self.folder)
        self.tokenizer = Tokenizer.from_folder(self.folder)
        self.prompt_config = PromptConfig.from_folder(self.folder)
        self.image_spec, self.video_spec = load_patch_specs(self.folder)
        self.defaults = generation_defaults(self.folder)
        self.device, self.dtype, self.quantize, self.compile = device, dtype, quantize, compile
        self.parallel = max(1, int(parallel))
        self.glmv = None  # glmv_cli.api.Glmv once loaded
        self._loading = threading.RLock()  # (a thread that asks while another loads waits)
        self._answering, self._answering_lock = 0, threading.Lock()
        self.after_load: list = []  # functions of the session, called once the weights are loaded

    @property
    def loaded(self) -> bool:
        return self.glmv is not None

    def load(self, progress=None):
        """Load the weights (once); returns the `glmv_cli.api.Glmv`. `progress`: told how far the
        reading has come, as api.load's (a status line's meter)."""
        with self._loading:
            if self.glmv is None:
                from glmv_cli.api import load

                self.glmv = load(self.folder, device=self.device, dtype=self.dtype, quantize=self.quantize,
                                 progress=progress)
                for hook in self.after_load:
                    hook(self)
        return self.glmv

    def conversation(self, system: str | None = None) -> Conversation:
        return Conversation(self, system)

    @contextmanager
    def one_question(self):
        """Around one question's answer: with parallel 1 the model holds one conversation at a time,
        so a question asked from another thread waits for the one being answered, and one asked
        from the same thread while its ask() is left half-read (which would wait for ever) is an
        InputError; never a KV cache that two answers overwrite."""
        if self.parallel > 1:  # (decoded together: batching.py)
            yield
            return
        me = threading.get_ident()
        if self._answering == me:
            raise InputError("this Session is answering another question on this thread (an ask() not read to "
                             "its end); read it to its end or close() it first, or make the Session with "
                             "parallel=N to answer N at once from N threads")
        with self._answering_lock:
            self._answering = me
            try:
                yield
            finally:
                self._answering = 0

    def ask(self, question: str, attachments: Iterable = (), *, system: str | None = None,
            load: LoadOptions | None = None, generation: GenerationOptions | None = None) -> Iterator[Event]:
        """One question without history; see Conversation.ask."""
        return self.conversation(system).ask(question, attachments, load=load, generation=generation)

    def run(self, question: str, attachments: Iterable = (), **kwargs) -> Result:
        """`ask`, collected: the final Result."""
        return collect(self.ask(question, attachments, **kwargs))

    def parallel_note(self) -> str | None:
        """What to tell someone who asked for several questions at once on CUDA, where that is not
        yet measured against one at a time (each in the one-request CUDA graph)."""
        if self.parallel <= 1:
            return None
        from glmv_cli.loading import pick_device

        if pick_device(self.device).type != "cuda":
            return None
        return (f"--parallel {self.parallel} on CUDA decodes up to {self.parallel} rows per step in a CUDA graph "
                f"captured for each set of requests, not yet measured against one at a time; python "
                f"benchmarks/batch_decode_bench.py MODEL --device cuda measures both on this card")

    def closes_thinking(self, gen: GenerationOptions) -> bool:
        """Thinking is asked off (enable_thinking false) of a template without that switch
        (GLM-4.1V-Thinking): then the thinking is closed as soon as it opens (a think budget of 0)."""
        return gen.template_kwargs.get("enable_thinking") is False and not self.prompt_config.thinking_switch

    def think_budget(self, budget: int | None):
        """The app.decode.ThinkBudget for `budget` thinking tokens (None: no budget)."""
        from glmv_cli.app.decode import ThinkBudget

        if budget is None:
            return None
        if budget < 0:
            raise InputError(f"--think-budget must be 0 or more tokens, got {budget}")
        tok = self.tokenizer
        tags = ("<think>", "</think>", "<answer>") if self.prompt_config.answer_tags else ("<think>", "</think>")
        ids = [tok.token_id(t) for t in tags]
        if None in ids:
            raise InputError(f"--think-budget needs {', '.join(tags)} tokens, which this checkpoint's "
                             f"tokenizer lacks")
        return ThinkBudget(budget, ids[0], ids[1], tuple(ids[1:]))  # </think>, then <answer> where it is used


def _checked(question, attachments, load, generation) -> tuple[str, list]:
    """The Python API's arguments, as ask() takes them: an InputError naming a wrong one (not an
    AttributeError deep inside); one attachment given bare (a path, a URL, bytes, a PIL image) is
    a list of one."""
    if not isinstance(question, str):
        raise InputError(f"the question is {type(question).__name__}, not text; ask with a str")
    for name, value, kind in (("load", load, LoadOptions), ("generation", generation, GenerationOptions)):
        if value is not None and not isinstance(value, kind):
            raise InputError(f"{name}= takes a {kind.__name__}(...), not a {type(value).__name__}")
    if attachments is None:
        return question, []
    if is_one(attachments):
        return question, [attachments]
    try:
        return question, list(attachments)
    except TypeError:
        raise InputError(f"attachments are a list of paths, URLs, bytes or PIL images, not a "
                         f"{type(attachments).__name__}") from None


class Conversation:
    """A chat: the turns so far (answers only, no thinking) and the session that answers."""

    def __init__(self, session: Session, system: str | None = None):
        from glmv_cli.prompt import Turn

        self.session, self.system = session, system
        self.turns: list[Turn] = [Turn.system(system)] if system else []
        self.attachments: list[list[Attachment]] = []  # per user turn, for transcripts
        self.pages: list[dict] = []  # how the last turn's PDF pages went in (Result.pages)
        self.layers: list[list[int]] = []  # ids of the text its PDF pages' images show: drafted from (lookup.py)
        self._last_tokens = 0  # prompt + completion tokens of the last turn

    def reset(self) -> None:
        from glmv_cli.prompt import Turn

        self.turns = [Turn.system(self.system)] if self.system else []
        self.attachments, self.layers, self._last_tokens = [], [], 0

    def ask(self, question: str, attachments: Iterable = (), *, load: LoadOptions | None = None,
            generation: GenerationOptions | None = None, role: str = "user",
            call_id: str | None = None) -> Iterator[Event]:
        """Load `attachments` (paths, URLs, bytes, Attachments), build the prompt with the history,
        generate; the turn joins the history when the generator ends, even when it is stopped
        early (Ctrl-C: the partial answer is kept). role "tool": the question and attachments are
        the result of the tool call `call_id` from the last answer (Result.tool_calls)."""
        question, attachments = _checked(question, attachments, load, generation)
        with self.session.one_question():
            return (yield from self._ask(question, attachments, load, generation, role, call_id))

    def _ask(self, question, attachments, load, generation, role, call_id) -> Iterator[Event]:
        from glmv_cli.prompt import Turn

        s, load, gen = self.session, load or LoadOptions(), generation or GenerationOptions()
        start = time.perf_counter()
        budget = s.think_budget(0 if s.closes_thinking(gen) else gen.think_budget)
        turn, inputs, parts, used, max_new, fmt = yield from self._prepare(question, attachments, load, gen,
                                                                           role, call_id)
        n_prompt = inputs.num_prompt_tokens
        preprocess_s = time.perf_counter() - start
        load_s = 0.0
        if not s.loaded:
            meter = Meter()
            yield Progress(f"loading weights of {s.name}", meter)
            load_s = s.load(meter).load_seconds
        ids, parser, decoding = [], StreamParser(), self._decoding(inputs, max_new, gen, budget, fmt)
        held = decoding.held()  # (the rest of the conversation so far is in the KV cache already)
        decoding.progress = meter = Meter()
        yield Progress(f"reading the prompt ({n_prompt:,} tokens" + (f", {held:,} of them read before)" if held
                                                                     else ")"), meter)
        lost = False  # out of memory before a token: the question does not join the history
        calls = CallSplitter(gen.tools) if gen.tools else None
        trace = [] if gen.logprobs is not None else None  # each token's section, for the answer's logprobs
        try:
            events = _stream(decoding, s.tokenizer.stream(), parser, ids, tuple(gen.stop), trace)
            cut = yield from (split_events(events, calls) if calls else events)
        except Exception as e:
            from glmv_cli import memory

            if not memory.is_out_of_memory(e):
                raise
            lost = not ids
            doing = f"{len(ids):,} tokens into the answer" if ids else f"reading a {n_prompt:,}-token prompt"
            raise memory.out_of_memory(e, s.glmv.device, doing, PROMPT_OOM_ADVICE, InputError) from e
        finally:
            if not lost:
                raw = s.tokenizer.decode(ids)
                answered = Turn.assistant(strip_calls(raw), tuple(calls.calls)) if calls else Turn.assistant(raw)
                self.turns += [turn, answered]
                self.attachments.append(used)
                self._last_tokens = n_prompt + len(ids)
                s.glmv.answers.add(ids)  # (the next questions draft from it: lookup.py)
        notes = _notes(parser, decoding, max_new) + _slow_images(decoding.prefill_seconds, parts, n_prompt,
                                                                 s.image_spec)
        yield from (Note(n) for n in notes)
        result = self._result(parser, decoding, ids, inputs, parts, notes, Timings(load_s, preprocess_s, 0, 0))
        if trace is not None:
            from glmv_cli.app.logprobs import answer_logprobs

            result = dataclasses.replace(result, logprobs=answer_logprobs(ids, trace, decoding.scores, s.tokenizer))
        if cut is not None:  # the answer ends before the stop string, as OpenAI's `stop` does
            result = dataclasses.replace(result, answer=result.answer[:cut], finish_reason="stop")
        if calls is not None:  # the answer's text without its calls (cut: the calls before the stop string)
            text = calls.text if cut is None else split_calls(result.answer, gen.tools)[0]
            finish = "tool_calls" if calls.calls and result.finish_reason == "stop" else result.finish_reason
            result = dataclasses.replace(result, answer=text, tool_calls=list(calls.calls), finish_reason=finish)
        yield Done(result)

    def prompt(self, question: str, attachments: Iterable = (), *, load: LoadOptions | None = None,
               generation: GenerationOptions | None = None):
        """The ModelInputs `ask` would give the model (attachments loaded, history, checks), without
        loading weights or generating: for training on exactly what inference sees."""
        return drain(self._prepare(question, attachments, load or LoadOptions(), generation or GenerationOptions()))[1]

    def restore(self, question: str, attachments: Iterable, *, raw: str, answer: str,
                load: LoadOptions | None = None, generation: GenerationOptions | None = None) -> None:
        """A past turn back into the history (`glmv ask -c`): its attachments read again as `load`
        says, its answer as the model wrote it (`raw`; `answer` is that without the reasoning);
        nothing is generated."""
        from glmv_cli.prompt import Turn, build_inputs

        load, gen = load or LoadOptions(), generation or GenerationOptions()
        if load.query is None:
            load = dataclasses.replace(load, query=question)
        parts, used = drain(self._load(attachments, load, self._limits(gen, question)[2]))
        self.turns += [Turn.user(*parts, question), Turn.assistant(raw)]
        self.attachments.append(used)
        s = self.session
        self._last_tokens = build_inputs(self.turns, s.tokenizer, s.prompt_config).num_prompt_tokens

    def _prepare(self, question: str, attachments: Iterable, load: LoadOptions, gen: GenerationOptions,
                 role: str = "user", call_id: str | None = None):
        """Load the attachments (progress events), build and check the prompt ->
        (user turn, inputs, parts, attachments, max new tokens, the answer's format)."""
        from glmv_cli.prompt import Turn, build_inputs, check_context

        s = self.session
        max_context, max_new, room = self._limits(gen, question)
        attachments = list(attachments)
        if room <= 0 and gen.max_new_tokens is not None and any(not isinstance(a, TextPart) for a in attachments):
            raise ContextFull(f"--max-new-tokens {gen.max_new_tokens:,} leaves no room for the attachments in the "
                              f"{max_context:,}-token context; allow fewer new tokens (or a longer --max-context)")
        if role not in ("user", "tool"):
            raise InputError(f"a question is asked as the user or answered as a tool, not as {role!r}")
        fmt = self._format(gen)  # (a format that does not compile fails before anything is loaded)
        if load.query is None:  # long PDFs: pages are chosen for the question
            load = dataclasses.replace(load, query=question)
        parts, used = yield from self._load(attachments, load, room)
        turn = Turn(role, (*parts, question), tool_call_id=call_id)
        inputs = build_inputs([*self.turns, turn], s.tokenizer, s.prompt_config,
                              tools=gen.tools.templated() if gen.tools else None, template_kwargs=gen.template_kwargs)
        if gen.max_new_tokens is None:  # glmv's default: whatever room the context leaves
            max_new = max(1, min(max_new, max_context - inputs.num_prompt_tokens))
        check_context(inputs.num_prompt_tokens, max_new, max_context)
        return turn, inputs, parts, used, max_new, fmt

    def _format(self, gen: GenerationOptions) -> AnswerFormat | None:
        """What the answer is held to: the asked format, or the tool calls tool_choice requires;
        compiled once here, so that one that does not compile is an InputError."""
        tools, fmt, tok = gen.tools, gen.format, self.session.tokenizer
        if tools is not None and not self.session.prompt_config.takes_tools:
            raise InputError(f"{self.session.name}'s chat template shows the model no tools, so it was not "
                             f"trained to call them (GLM-4.6V-Flash is); send the request without tools")
        if tools is not None and tools.held:
            if fmt is not None:
                raise InputError("the answer cannot be both in a format (response_format) and the tool calls "
                                 "tool_choice requires; send one of them")
            return tools.format(tok)  # (checked there, its message naming the tools)
        if fmt is not None:
            fmt.matcher(tok)
        return fmt

    def _limits(self, gen: GenerationOptions, question: str) -> tuple[int, int, int]:
        """(context, max new tokens, tokens left for attachments)."""
        s = self.session
        if gen.max_context and gen.max_context > s.config.text.max_position_embeddings:
            raise InputError(f"--max-context {gen.max_context:,} is over the model's context "
                             f"({s.config.text.max_position_embeddings:,} tokens); give at most that")
        max_context = gen.max_context or s.config.text.max_position_embeddings
        max_new = gen.max_new_tokens or int(s.defaults.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        answer_room = max_new if gen.max_new_tokens is not None else min(max_new, max_context // 4)
        room = max_context - answer_room - self._last_tokens - len(s.tokenizer.encode(question)) - PROMPT_OVERHEAD
        return max_context, max_new, room

    def _load(self, attachments: Iterable, load: LoadOptions, room: int):
        """Resolve and load each attachment (events), then return (parts, attachments)."""
        s, parts, used = self.session, [], []
        self.pages = []
        for item in attachments:
            if isinstance(item, TextPart):  # text between attachments (an OpenAI message), kept in place
                parts.append(item.text)
                continue
            if isinstance(item, str) and is_url(item):
                yield Progress(f"fetching {item}")
            att = resolve(item)
            yield Progress(loaders.describe(att, load))
            loaded = loaders.load(att, s.image_spec, s.video_spec, load, budget_tokens=max(room, 1),
                                  count_tokens=self._count)
            yield from (Note(n) for n in loaded.notes)
            room -= sum(_tokens(p, s.prompt_config.merge_size, self._count) for p in loaded.parts)
            parts += loaded.parts
            self.pages += loaded.pages
            self.layers += [s.tokenizer.encode(text) for text in loaded.layers]  # (once, not every turn)
            used.append(att)
        return parts, used

    def _count(self, text: str) -> int:
        return len(self.session.tokenizer.encode(text))

    def _decoding(self, inputs, max_new: int, gen: GenerationOptions, budget, fmt: AnswerFormat | None):
        from glmv_cli.app.decode import BudgetState
        from glmv_cli.generate import Generation

        s = self.session
        glmv = s.load()
        sampling = glmv.sampling(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k,
                                 repetition_penalty=gen.repetition_penalty, seed=gen.seed,
                                 presence_penalty=gen.presence_penalty, frequency_penalty=gen.frequency_penalty)
        forced = BudgetState(budget).after if budget else None
        steering = None
        if fmt is not None:
            from glmv_cli.app.answer_format import AnswerSteering

            steering = AnswerSteering(fmt, s.tokenizer, glmv.stop_ids, glmv.model.cfg.text.vocab_size,
                                      answer_tags=s.prompt_config.answer_tags)
        batcher = glmv.batcher(s.parallel) if s.parallel > 1 else None
        return Generation(glmv.model, inputs.as_dict(), max_new_tokens=max_new, sampling=sampling,
                          stop_ids=glmv.stop_ids, forced=forced,
                          step=None if batcher else glmv.decode_step(s.compile), prompt_cache=glmv.reusable_cache(),
                          steering=steering, logprobs=gen.logprobs, batcher=batcher,
                          references=[*glmv.answers.snapshot(), *self.layers,
                                      *([s.tokenizer.encode(gen.prediction)] if gen.prediction else [])])

    def _result(self, parser, decoding, ids, inputs, parts, notes, timings: Timings) -> Result:
        from glmv_cli.prompt import answer_for_history

        raw = self.session.tokenizer.decode(ids)
        n_decoded = max(len(ids) - 1, 0)
        rate = n_decoded / decoding.decode_seconds if n_decoded and decoding.decode_seconds else 0.0
        images = [(p.source, p.original_size) for p in parts if isinstance(p, VisualInput) and p.kind == "image"]
        return Result(
            model=self.session.name, thinking=parser.thinking, answer=parser.answer, raw=raw,
            boxes=find_boxes(answer_for_history(raw)), images=images,
            usage=Usage(inputs.num_prompt_tokens, sum(inputs.attachment_tokens), len(ids), decoding.cached_tokens,
                        decoding.drafted, decoding.accepted, self._reasoning_tokens(parser, ids)),
            timings=Timings(timings.load_s, timings.preprocess_s, decoding.prefill_seconds, rate),
            finish_reason=decoding.finish_reason or "length", completion_ids=ids, notes=notes,
            pages=list(self.pages),
        )

    def _reasoning_tokens(self, parser, ids: list[int]) -> int:
        """The completion's tokens up to and with </think> (all of them when the thought never closed)."""
        if not parser.thinking:
            return 0
        end = self.session.tokenizer.token_id("</think>")
        return ids.index(end) + 1 if end in ids else len(ids)

    def run(self, question: str, attachments: Iterable = (), **kwargs) -> Result:
        return collect(self.ask(question, attachments, **kwargs))

    def transcript(self) -> str:
        """The conversation as Markdown (answers without thinking), for /save."""
        from glmv_cli.prompt import answer_for_history

        out, k = [f"# glmv chat with {self.session.name}\n"], 0
        for turn in self.turns:
            if turn.role == "system":
                out.append(f"**System:** {turn.text}\n")
            elif turn.role == "user":
                names = [a.label for a in self.attachments[k]] if k < len(self.attachments) else []
                k += 1
                out.append("## You\n")
                if names:
                    out.append("Attached: " + ", ".join(f"`{n}`" for n in names) + "\n")
                out.append(_question_text(turn) + "\n")
            else:
                answer = answer_for_history(turn.text).replace("<|begin_of_box|>", "").replace("<|end_of_box|>", "")
                out.append(f"## Assistant\n\n{answer}\n")
        return "\n".join(out)


def _stream(decoding, decoder, parser: StreamParser, ids: list[int], stop: tuple[str, ...] = (),
            trace: list | None = None):
    """Token ids -> text deltas -> Thinking / Answer events; `ids` collects the ids. Decoding ends
    early once the answer holds one of the `stop` strings (the events may carry text past it: the
    caller cuts there); returns where in the answer the first one starts, or None."""
    longest, tokens = max(map(len, stop), default=0), iter(decoding)
    for token in tokens:
        ids.append(token)
        seen = len(parser.answer)
        yield from parser.feed(decoder.feed(token))
        if trace is not None:  # (app.logprobs: which tokens are the answer's)
            trace.append((parser.state, seen > 0))
        if stop and len(parser.answer) > seen:
            start = max(0, seen - longest + 1)  # a stop string may straddle two deltas
            hits = [i for i in (parser.answer.find(t, start) for t in stop) if i >= 0]
            if hits:
                tokens.close()  # frees the cache now; timings are kept
                yield from parser.finish()
                return min(hits)
    yield from parser.feed(decoder.flush())
    yield from parser.finish()
    return None


def _question_text(turn) -> str:
    return "".join(p for p in turn.parts if isinstance(p, str)).strip()


def _tokens(part, merge_size: int, count) -> int:
    if isinstance(part, VisualInput):
        return part.grid_thw[0] * part.tokens_per_frame(merge_size) + 2
    return count(part) + 1  # + 1: a token may straddle two parts; check_context has the exact count


def _notes(parser: StreamParser, decoding, max_new: int) -> list[str]:
    cut = decoding.finish_reason == "length"
    state = parser.unfinished
    if state == "thinking":
        how = f"reached {max_new} new tokens" if cut else "stopped"
        return [f"the model {how} while still thinking, so there is no answer; "
                + ("raise --max-new-tokens or cap the thinking with --think-budget" if cut else "ask again")]
    if cut:
        return [f"the answer was cut off at {max_new} new tokens; raise --max-new-tokens for the rest"]
    if state == "answer":
        return ["the model ended without closing its answer"]
    return []


SLOW_PROMPT_S = 30.0  # a prompt read slower than this, mostly images, gets a hint (a CPU's; a GPU's take ~1 s)
TOKENS_AN_IMAGE = 1000  # what the hint's --max-pixels makes of an image


def _slow_images(seconds: float, parts, n_prompt: int, spec) -> list[str]:
    """Where images made most of a prompt that took long to read: how to make them cheaper."""
    from glmv_cli.inputs.patches import max_pixels_for

    sizes = [p.tokens_per_frame(spec.merge_size) for p in parts if isinstance(p, VisualInput) and p.kind == "image"]
    if not sizes or seconds < SLOW_PROMPT_S or sum(sizes) < n_prompt / 2 or max(sizes) < 2 * TOKENS_AN_IMAGE:
        return []
    which = "the image" if len(sizes) == 1 else f"{len(sizes)} images (up to {max(sizes):,} each)"
    return [f"the prompt took {seconds:.0f} s to read, {sum(sizes):,} of its {n_prompt:,} tokens for {which}; "
            f"--max-pixels {max_pixels_for(TOKENS_AN_IMAGE, spec)} reads an image as at most ~{TOKENS_AN_IMAGE:,} "
            f"tokens: faster, with less fine detail"]


def save_transcript(conversation: Conversation, path: str | Path) -> Path:
    path = Path(path).expanduser()
    try:
        path.write_text(conversation.transcript(), encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write {path} ({e.strerror or e})") from None
    return path
