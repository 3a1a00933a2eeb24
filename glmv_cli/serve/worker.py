"""The threads that run the model, fed by a queue; the HTTP side stays async.

`threads` workers (glmv serve --parallel) each take a job and iterate its event generator; with
more than one, the Session decodes their answers together (batching.py), each job in its own
Conversation. A `Job` holds a function that returns the event generator (run on a worker thread)
and an asyncio queue the worker posts events into (thread-safely).

At most `threads` jobs run and `max_queue` more wait: a request's jobs (its `n` choices) are taken
all or none, `QueueFull` (503) when they would not fit now, `QueueFull(at_most=)` (400) when they
never could. `Job.cancel()` (a dropped client) frees a waiting job's place at once, and makes a
running job's worker close the generator at its next event, which stops generation at the next
token (as Ctrl-C does in `glmv chat`), so the worker is free for the next job.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

END = object()  # posted after the last event


class QueueFull(Exception):
    """Every place in the queue is taken; with `at_most`, the request's jobs are more than the
    server ever runs and queues at once."""

    def __init__(self, at_most: int | None = None):
        super().__init__()
        self.at_most = at_most


class Job:
    """One request's generation: events (or an exception, then END) arrive on `events`."""

    def __init__(self, make_events: Callable[[], Iterator], loop: asyncio.AbstractEventLoop):
        self.make_events = make_events
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.state = "new"  # -> waiting -> running -> done, or waiting -> dropped (cancelled before it ran)
        self.on_cancel: Callable[[Job], None] = lambda job: None

    def cancel(self) -> None:
        self.cancelled.set()
        self.on_cancel(self)

    def post(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down)
            self.cancel()

    async def next(self):
        """The next event, END, or raises what the generator raised."""
        item = await self.events.get()
        if isinstance(item, BaseException):
            raise item
        return item


class Worker:
    """`threads` daemon threads, each running one job at a time; at most `max_queue` more jobs wait."""

    def __init__(self, max_queue: int = 16, threads: int = 1):
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.max_queue, self.threads = max(1, max_queue), max(1, threads)
        self.running = 0  # jobs being run now
        self.taken = 0  # jobs waiting or running
        self.served = 0
        self._count = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name=f"glmv-model-{i}", daemon=True)
                         for i in range(self.threads)]
        for t in self._threads:
            t.start()

    @property
    def busy(self) -> bool:
        return self.running > 0

    @property
    def waiting(self) -> int:
        with self._count:
            return self.taken - self.running

    def submit(self, *jobs: Job) -> list[Job]:
        """Queues all of `jobs` or none (QueueFull)."""
        most = self.threads + self.max_queue
        if len(jobs) > most:
            raise QueueFull(at_most=most)
        with self._count:
            if self.taken + len(jobs) > most:
                raise QueueFull
            self.taken += len(jobs)
            for job in jobs:
                job.state, job.on_cancel = "waiting", self._drop
        for job in jobs:
            self.jobs.put(job)
        return list(jobs)

    def _drop(self, job: Job) -> None:
        """A job cancelled while it waits gives its place back now, not when a worker gets to it."""
        with self._count:
            if job.state == "waiting":
                job.state = "dropped"
                self.taken -= 1

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            with self._count:
                if job.state != "waiting":  # (dropped)
                    continue
                job.state = "running"
                self.running += 1
            try:
                self._run_job(job)
            finally:
                with self._count:
                    job.state = "done"
                    self.running -= 1
                    self.taken -= 1
                    self.served += 1

    @staticmethod
    def _run_job(job: Job) -> None:
        events = None
        try:
            events = job.make_events()
            for event in events:
                if job.cancelled.is_set():
                    log.info("client gone: generation stopped")
                    break
                job.post(event)
        except Exception as e:  # noqa: BLE001  (handed to the request, which answers with it)
            job.post(e)
        finally:
            if events is not None and hasattr(events, "close"):
                events.close()
            job.post(END)
