"""One chat completion: a request -> a job on the model worker -> a JSON answer or server-sent events.

The worker runs the same Conversation the CLI uses (history turns from the earlier messages, the
last user message as the question), so the prompt is the one `glmv ask` / `glmv chat` builds.
Events are read until the first piece of text before any HTTP answer is sent: bad input (an image
that does not decode, a prompt over the context) becomes a 4xx even for a stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from glmv_cli.app.loaders import LoadOptions
from glmv_cli.app.messages import Message, history_turns, parse_messages, split_question
from glmv_cli.app.session import Done, Progress, Session
from glmv_cli.app.tools import ToolCalled
from glmv_cli.serve import protocol as p
from glmv_cli.serve.stored import ResponseStore
from glmv_cli.serve.worker import END, Job, Worker
from glmv_cli.stream import Answer, Thinking

DISCONNECT_POLL_S = 0.5


@dataclass
class Service:
    """What every request shares: the session, its worker and the server's media rules."""

    session: Session
    worker: Worker
    local_root: Path | None = None
    load: LoadOptions = LoadOptions()
    names: tuple[str, ...] = ()  # --served-model-name: the first is the model's id, all are accepted
    responses: ResponseStore = field(default_factory=ResponseStore)  # the Responses API's, kept (stored.py)
    max_context: int | None = None  # --max-context: prompt + answer of every request (None: the model's)

    @property
    def context(self) -> int:
        """The tokens a request may hold, prompt and answer (GET /v1/models' max_model_len)."""
        return self.max_context or self.session.config.text.max_position_embeddings

    @property
    def model_id(self) -> str:
        return self.names[0] if self.names else self.session.name

    def knows(self, model: str | None) -> bool:
        name = self.session.name
        return model in (None, "", *self.names, name, Path(name).name, str(self.session.folder))

    def parse(self, request: p.ChatRequest) -> list[Message]:
        return parse_messages(request.messages, local_root=self.local_root)

    def jobs(self, messages: list[Message], request: p.ChatRequest) -> list[Job]:
        """The request's `n` choices, each its own job (with a seed, choice i samples with seed + i);
        all are queued or none (QueueFull)."""
        gen = request.generation()
        seeds = [gen if gen.seed is None or not i else dataclasses.replace(gen, seed=gen.seed + i)
                 for i in range(request.n)]
        return self.worker.submit(*(self._job(messages, request, seeded) for seeded in seeds))

    def job(self, messages: list[Message], request: p.ChatRequest) -> Job:
        return self.worker.submit(self._job(messages, request, request.generation()))[0]

    def _job(self, messages: list[Message], request: p.ChatRequest, gen) -> Job:
        if self.max_context:
            gen = dataclasses.replace(gen, max_context=self.max_context)

        def events():
            conversation = self.session.conversation()
            conversation.turns = history_turns(messages, self.session, self.load)
            last = messages[-1]
            items, question = split_question(last)
            yield from conversation.ask(question, items, load=self.load, generation=gen, role=last.role,
                                        call_id=last.tool_call_id)

        return Job(events, asyncio.get_running_loop())


class ClientGone(Exception):
    """The client disconnected before its answer was sent; its job is cancelled."""


class Watch:
    """A job's events, checking every DISCONNECT_POLL_S that the client is still there (while it
    waits in the queue, while the prompt is read, while a JSON answer is generated): gone, the job
    is cancelled and ClientGone raised."""

    def __init__(self, job: Job, is_disconnected):
        self.job, self.is_disconnected, self.checked = job, is_disconnected, time.monotonic()

    async def next(self):
        while True:
            if time.monotonic() - self.checked >= DISCONNECT_POLL_S:
                self.checked = time.monotonic()
                if await self.is_disconnected():
                    self.job.cancel()
                    raise ClientGone
            try:
                return await asyncio.wait_for(self.job.next(), DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                continue


async def first_text(job: Job, is_disconnected) -> list:
    """Events up to and including the first Thinking / Answer / ToolCalled / Done (raises the job's error)."""
    seen, watch = [], Watch(job, is_disconnected)
    while True:
        event = await watch.next()
        if event is END:  # no text at all (not expected: a Done always comes)
            return [*seen, END]
        if not isinstance(event, Progress):
            seen.append(event)
        if isinstance(event, (Thinking, Answer, ToolCalled, Done)):
            return seen


async def rest(job: Job, head: list, is_disconnected=None) -> AsyncIterator:
    """The events after `head` (Progress left out)."""
    for event in head:
        if event is END:
            return
        yield event
    if isinstance(head[-1], Done):
        return
    next_event = Watch(job, is_disconnected).next if is_disconnected else job.next
    while True:
        event = await next_event()
        if event is END:
            return
        if not isinstance(event, Progress):
            yield event


@dataclass
class Reply:
    """A whole reply, gathered from a job's events."""

    thinking: str
    answer: str
    calls: list
    result: object  # the session's Result (None if the job ended without one)
    finish_reason: str


async def gather(job: Job, head: list, stops: list[str], is_disconnected) -> Reply:
    """Every event of the job (stop strings applied to the answer), as one Reply."""
    thinking, answer, result, stop, calls = "", "", None, p.StopFilter(stops), []
    async for event in rest(job, head, is_disconnected):  # after a stop string the session ends at once
        if isinstance(event, Thinking):
            thinking += event.text
        elif isinstance(event, Answer):
            answer += stop.feed(event.text)
        elif isinstance(event, ToolCalled):
            calls.append(event.call)
        elif isinstance(event, Done):
            result = event.result
    answer += stop.flush()
    finish = "stop" if stop.stopped else (result.finish_reason if result else "stop")
    return Reply(thinking, answer, calls, result, finish)


async def heads(jobs: list[Job], is_disconnected) -> list[list]:
    """first_text of each job (the first one's error raised: every choice has the same input)."""
    return [await first_text(job, is_disconnected) for job in jobs]


async def complete(jobs: list[Job], heads: list[list], request: p.ChatRequest, model: str,
                   is_disconnected) -> tuple[dict, list]:
    """The whole answer (each of the n choices, generated together) as one chat.completion object,
    and the choices' Results (for the request's log line)."""
    replies = await asyncio.gather(*(gather(job, head, request.stop, is_disconnected)
                                     for job, head in zip(jobs, heads, strict=True)))
    choices = [p.choice(i, r.thinking, r.answer, r.finish_reason, r.result, r.calls) for i, r in enumerate(replies)]
    results = [r.result for r in replies]
    return {**p.Ids(model).head("chat.completion"), "choices": choices, "usage": p.usage_of(results)}, results


async def stream(jobs: list[Job], heads: list[list], request: p.ChatRequest, model: str,
                 note=lambda **fields: None) -> AsyncIterator[str]:
    """Server-sent events: per choice a role chunk, reasoning / content deltas and its finish chunk
    (the n choices' chunks interleaved as they come, each with its index), then the usage and [DONE].
    Closing this generator (the client went away) cancels the jobs: generation stops at the next token.
    `note` is told the results (and an error) for the request's log line."""
    ids, results = p.Ids(model), [None] * len(jobs)
    choices = [_choice_chunks(job, head, request, ids, i, results)
               for i, (job, head) in enumerate(zip(jobs, heads, strict=True))]
    try:
        async for obj in _merged(choices):
            yield _sse(obj)
        if request.include_usage and all(r is not None for r in results):
            yield _sse(p.usage_chunk(ids, results))
    except Exception as e:  # noqa: BLE001  (mid-stream: the status line is sent; say it in the stream)
        from glmv_cli.serve.errors import describe

        note(error=describe(e)[1])
        yield _sse(p.error_body(describe(e)[1]))
    finally:
        note(results=results)
        for job in jobs:
            job.cancel()
    yield "data: [DONE]\n\n"


async def _choice_chunks(job: Job, head: list, request: p.ChatRequest, ids: p.Ids, index: int,
                         results: list) -> AsyncIterator[dict]:
    """One choice's chunks; its Result goes to results[index]."""
    stop, calls = p.StopFilter(request.stop), 0
    yield p.chunk(ids, {"role": "assistant", "content": ""}, index=index)
    async for event in rest(job, head):
        if isinstance(event, Thinking):
            yield p.chunk(ids, p.reasoning_delta(event.text), index=index)
        elif isinstance(event, Answer):  # after a stop string the session ends at once, with its usage
            if text := stop.feed(event.text):
                yield p.chunk(ids, {"content": text}, index=index)
        elif isinstance(event, ToolCalled):
            yield p.chunk(ids, p.tool_call_delta(event.call, calls), index=index)
            calls += 1
        elif isinstance(event, Done):
            results[index] = event.result
    result = results[index]
    if tail := stop.flush():
        yield p.chunk(ids, {"content": tail}, index=index)
    finish = "stop" if stop.stopped else (result.finish_reason if result else "stop")
    if (scores := p.logprobs(result)) is not None:  # the answer's tokens, all in one chunk before the last
        yield p.chunk(ids, {}, None, scores, index=index)
    yield p.chunk(ids, {}, finish, index=index)


async def _merged(streams: list[AsyncIterator[dict]]) -> AsyncIterator[dict]:
    """The items of several async iterators as they come (one: itself); an error in any is raised."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield item
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(s):
        try:
            async for item in s:
                await queue.put(item)
            await queue.put(done)
        except Exception as e:  # noqa: BLE001  (re-raised below)
            await queue.put(e)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        left = len(tasks)
        while left:
            item = await queue.get()
            if item is done:
                left -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for t in tasks:
            t.cancel()


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
