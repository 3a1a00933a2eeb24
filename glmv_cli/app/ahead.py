"""Several questions' event streams, read in order, run ahead on threads.

`Ahead(makers, parallel)`: makers[k]() gives the k-th event iterator (a Conversation.ask, say).
`events(k)` yields the k-th one's events, in the reader's thread. With parallel 1 each runs only
when it is read, as a plain loop would. With parallel N, N threads run them in order ahead of the
reader, each stream's events queued for it: a local Session with `parallel` N decodes their answers
together (batching.py), a RemoteSession sends N requests at once. What a stream raised is raised
when its turn comes. `stop()` (or leaving the with-block) ends the ones still running at their next
event. Used by `ask --each --parallel` and `pdf --map-reduce --parallel`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

_END = object()


class Ahead:
    def __init__(self, makers: list[Callable[[], Iterator]], parallel: int = 1):
        self.makers, self.parallel = makers, parallel
        self._queues = [queue.Queue() for _ in makers]
        self._next = 0
        self._lock, self._stopped = threading.Lock(), threading.Event()
        if parallel > 1:
            for i in range(min(parallel, len(makers))):
                threading.Thread(target=self._work, name=f"glmv-ahead-{i}", daemon=True).start()

    def __enter__(self) -> Ahead:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def events(self, k: int) -> Iterator:
        """The k-th stream's events (raising what it raised)."""
        if self.parallel <= 1:
            yield from self.makers[k]()
            return
        while (event := self._queues[k].get()) is not _END:
            if isinstance(event, BaseException):
                raise event
            yield event

    def stop(self) -> None:
        """No more streams: the running ones end at their next event (a generation at its next token)."""
        self._stopped.set()

    def _work(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                k, self._next = self._next, self._next + 1
            if k >= len(self.makers):
                return
            events = None
            try:
                events = self.makers[k]()
                for event in events:
                    if self._stopped.is_set():
                        break
                    self._queues[k].put(event)
            except BaseException as e:  # noqa: BLE001  (raised in the reader's thread, in its turn)
                self._queues[k].put(e)
            finally:
                if events is not None and hasattr(events, "close"):
                    events.close()
                self._queues[k].put(_END)
