"""Concurrent generations, decoded together: one batched step per token for all of them.

A decode step is bound by reading the weights (GLM-4.1V-9B: 18 GB in bfloat16 per token), so
answering four requests one after another reads them four times per token where one step of four
rows (Glm4v.decode_rows) reads them once. Each generation runs on its own thread, as a `glmv serve`
worker or a caller's thread, and keeps its own KV cache; `DecodeBatcher` is what they share:

* `lock`: the model (and the prompt cache) to one thread alone, for what cannot be batched: the
  prompt cache's bookkeeping and reading a prompt (prefill); `exclusive(caches)` also puts that
  generation's cache in the model, for tokens fed in at once (a think budget's `</think>`). While
  others are decoding, a prompt is read SHARED_CHUNK tokens at a time and `pause` lets their next
  step run between two chunks;
* `step(...)`: a thread's next token. Its row waits until every generation that is decoding has
  sent one (or the model has been idle for `wait_s`: a thread whose reader is slow holds up no
  one), then one thread runs them all as one step and each gets its row of logits back. A lone
  generation runs at once, as `Glm4v.decode` (no waiting, the same numbers).

Rows are at most `rows` per step (the rest go in the next). Row b's logits equal that sequence
decoded alone (tests/model/test_batched_decode.py), so concurrency changes no answer.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch

WAIT_S = 0.02  # the longest a row waits for the other generations' rows
SHARED_CHUNK = 512  # prompt tokens read between two of the others' steps while they are decoding
PAUSE_S = 5.0  # the longest a prompt waits, between two chunks, for the others' step


@dataclass
class _Row:
    token: torch.Tensor  # (1, 1)
    pos: int
    delta: int
    caches: list
    since: float = 0.0  # when it was sent
    logits: torch.Tensor | None = None
    error: BaseException | None = None

    def result(self) -> torch.Tensor:
        if self.error is not None:
            raise self.error
        return self.logits


class DecodeBatcher:
    def __init__(self, model, rows: int = 4, wait_s: float = WAIT_S, graphs=None):
        """`graphs` (batch_graphs.RowGraphs; CUDA): the steps run as CUDA graphs, one per set of
        generations; without, eagerly (a lone generation as Glm4v.decode)."""
        self.model, self.rows, self.wait_s, self.graphs = model, max(1, rows), wait_s, graphs
        self.lock = threading.RLock()  # the model (and the prompt cache) to one thread
        self._cv = threading.Condition()
        self._members = 0  # generations past their prompt, decoding
        self._pending: list[_Row] = []
        self._running = False  # a step is being run
        self._last_end = 0.0  # when the last step ended
        # id() of the caches generations are using (not to be reused in place) -> their bytes
        self.live: dict[int, int] = {}
        self.steps = self.row_steps = self.widest = 0  # batched steps run, rows in them, the most at once

    def live_bytes(self) -> int:
        """What the caches of the generations running now take (or will, once written)."""
        return sum(self.live.values())

    @property
    def decoding(self) -> int:
        return self._members

    @contextmanager
    def exclusive(self, caches: list | None = None):
        """The model to this thread alone; `caches` (a generation's own) in it for eager code
        (prefill, Glm4v.decode), taken out again after."""
        with self.lock:
            text = self.model.language_model
            text.caches = caches
            try:
                yield
            finally:
                text.caches = None

    def pause(self, caches: list) -> None:
        """Between two chunks of a prompt read under `lock` (held once by this thread): let the
        generations that are decoding run one step, then take the model back, `caches` in it. A
        long prompt then holds up the others' answers for a chunk at a time, not for all of it."""
        with self._cv:
            if not self._members:
                return
            done = self.steps
            # rows already waiting: their step runs as soon as the model is free; none yet: a short
            # wait for them (a reader that has stopped reading holds up no prompt)
            timeout = PAUSE_S if self._pending or self._running else self.wait_s
        self.lock.release()
        try:
            with self._cv:
                self._cv.wait_for(lambda: self.steps != done or not self._members, timeout=timeout)
        finally:
            self.lock.acquire()
            self.model.language_model.caches = caches

    def prompt_chunk(self) -> int | None:
        """The chunk a prompt is read in: a short one while others are decoding (None: the default)."""
        return SHARED_CHUNK if self._members else None

    def join(self) -> None:
        """A generation starts decoding: steps wait for its rows too."""
        with self._cv:
            self._members += 1

    def leave(self, caches: list | None = None) -> None:
        """A generation stops decoding; the graphs that hold its cache go."""
        if self.graphs is not None and caches is not None:
            with self.lock:
                self.graphs.forget(caches)
        with self._cv:
            self._members -= 1
            self._cv.notify_all()  # (a row waiting for this one's need not)

    def step(self, token: torch.Tensor, pos: int, delta: int, caches: list) -> torch.Tensor:
        """The logits (1, V) after `token` (1, 1) at position `pos` of `caches` (this generation's
        own; rope delta `delta`), computed in one step with the other generations' rows."""
        row = _Row(token, pos, delta, caches, since=time.monotonic())
        with self._cv:
            self._pending.append(row)
            self._cv.notify_all()
            while row.logits is None and row.error is None:
                if row not in self._pending or self._running:  # a step is running: its rows come next
                    self._cv.wait()
                    continue
                # every decoding generation has sent its row, or one has not for wait_s of an idle
                # model (its reader is slow): run what there is. (Counted from the last step's end: a
                # step longer than wait_s must not part generations that are in step.)
                idle = time.monotonic() - max(row.since, self._last_end)
                if len(self._pending) < min(self._members, self.rows) and idle < self.wait_s:
                    self._cv.wait(timeout=self.wait_s - idle)
                    continue
                self._pending.remove(row)  # this thread runs the step: its row and the first others
                batch = [row, *self._pending[:self.rows - 1]]
                del self._pending[:self.rows - 1]
                self._running = True
                break
            else:
                return row.result()
        self._run(batch)
        return row.result()

    def _run(self, batch: list[_Row]) -> None:
        try:
            with self.lock:
                if self.graphs is not None:
                    logits = self.graphs.run(batch)
                elif len(batch) == 1:
                    r = batch[0]
                    self.model.language_model.caches = r.caches
                    try:
                        logits = self.model.decode(r.token, r.pos, r.delta)[:, -1]
                    finally:
                        self.model.language_model.caches = None
                else:
                    logits = self.model.decode_rows(torch.cat([r.token for r in batch]), [r.pos for r in batch],
                                                    [r.delta for r in batch], [r.caches for r in batch])
            for b, r in enumerate(batch):
                r.logits = logits[b:b + 1]
            self.steps += 1
            self.row_steps += len(batch)
            self.widest = max(self.widest, len(batch))
        except BaseException as e:  # every row's thread raises it (out of memory, most often)
            for r in batch:
                r.error = e
        with self._cv:
            self._running, self._last_end = False, time.monotonic()
            self._cv.notify_all()
