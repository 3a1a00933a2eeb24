"""The threads that run the model, fed by a bounded queue; the HTTP side stays async.

`threads` workers (glmv serve --parallel) each take a job and iterate its event generator; with
more than one, the Session decodes their answers together (batching.py), each job in its own
Conversation. A `Job` holds a function that returns the event generator (run on a worker thread)
and an asyncio queue the worker posts events into (thread-safely). `Job.cancel()` (a dropped client) makes the worker
close the generator at its next event, which stops generation at the next token (as Ctrl-C does in
`glmv chat`), so the worker is free for the next job. A full queue raises `QueueFull` (503).
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
    """Every slot of the queue is taken."""


class Job:
    """One request's generation: events (or an exception, then END) arrive on `events`."""

    def __init__(self, make_events: Callable[[], Iterator], loop: asyncio.AbstractEventLoop):
        self.make_events = make_events
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

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
    """`threads` daemon threads, each running one job at a time, from a queue of at most
    `max_queue` waiting jobs."""

    def __init__(self, max_queue: int = 16, threads: int = 1):
        self.jobs: queue.Queue[Job] = queue.Queue(maxsize=max(1, max_queue))
        self.running = 0  # jobs being run now
        self.served = 0
        self._count = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name=f"glmv-model-{i}", daemon=True)
                         for i in range(max(1, threads))]
        for t in self._threads:
            t.start()

    @property
    def busy(self) -> bool:
        return self.running > 0

    @property
    def waiting(self) -> int:
        return self.jobs.qsize()

    def submit(self, job: Job) -> Job:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull from None
        return job

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job.cancelled.is_set():
                continue
            with self._count:
                self.running += 1
            try:
                self._run_job(job)
            finally:
                with self._count:
                    self.running -= 1
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
