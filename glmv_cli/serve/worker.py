"""The one thread that runs the model, fed by a bounded queue; the HTTP side stays async.

The Session is not thread-safe, so exactly one worker thread iterates event generators. A `Job`
holds a function that returns the event generator (run on the worker thread) and an asyncio queue
the worker posts events into (thread-safely). `Job.cancel()` (a dropped client) makes the worker
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
    """A daemon thread running jobs one at a time from a queue of at most `max_queue` waiting jobs."""

    def __init__(self, max_queue: int = 16):
        self.jobs: queue.Queue[Job] = queue.Queue(maxsize=max(1, max_queue))
        self.busy = False
        self.served = 0
        self._thread = threading.Thread(target=self._run, name="glmv-model", daemon=True)
        self._thread.start()

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
            self.busy = True
            try:
                self._run_job(job)
            finally:
                self.busy = False
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
