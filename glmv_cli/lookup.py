"""Draft tokens looked up in the text so far (prompt lookup decoding), for generate.py.

A decode step reads every weight to produce one token; the same read can check several. Answers
often repeat what came before them: the question, a PDF's words, a chat's earlier turns, and above
all a thinking model's own thinking, which its answer restates. `Lookup` keeps the ids of the
sequence so far and, after each new token, finds the last earlier place where the sequence's last
few ids (from MAX_NGRAM down to MIN_NGRAM) occurred, and proposes the ids that followed there. The
generation runs the new token and that draft through the model in one step; every drafted id the
model then draws itself costs no step of its own. Nothing is ever accepted that the model would
not have drawn: each token is still drawn from its own logits, by the same rules and random
numbers, and a draft only saves the step when the drawn token is the drafted one.

Checking drafts is not free: a step of 1 + k tokens costs more than a step of one (little on a
large model bound by reading its weights, a fifth or more on a small one bound by Python), and a
draft that is not drawn saves nothing. So every lookup's draft is scored against the tokens that
follow, whether it was checked or not (the score of one not checked is free), and drafts are
checked only while they pay: while the ids a draft saves, on average, exceed what checking it
costs beyond a one-token step (`Lookup.paying`, with the generation's measured step times).

Image and video placeholder ids are never drafted, nor matched (a run of them matches itself).
GLMV_SPECULATE=0 turns it off; GLMV_SPECULATE=N drafts at most N ids a step.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence

MAX_NGRAM = 4  # the longest suffix looked up first: a longer match predicts better
MIN_NGRAM = 2  # one id alone ("the", a comma) is followed by too many things to draft from
DRAFT_TOKENS = 3  # a step of 4 tokens: 0.95x a one-token step in bfloat16, 1.17x in int8 (`1b`, CPU; lookup_bench.py)
SAVED_PRIOR = 0.5  # ids a draft saves, before any was scored
COST_PRIOR = 1.25  # a step of 1 + DRAFT_TOKENS against a step of one, before any was timed
EMA = 0.25  # weight of the newest draft's score and step time
SEPARATOR = -1  # after each reference: no n-gram spans it, no draft runs into what follows
RECENT_IDS = 8192  # the ids of the last answers kept to draft from (RecentAnswers)


def draft_tokens(device_type: str) -> int:
    """Ids drafted a step by default: DRAFT_TOKENS on a CPU or a Mac, or what GLMV_SPECULATE says
    (0: off). CUDA drafts only when asked: whether its graph of a token and 3 drafts costs little
    enough more than the one-token graph is not yet measured (benchmarks/lookup_bench.py)."""
    value = os.environ.get("GLMV_SPECULATE", "").strip()
    if value:
        try:
            return max(0, int(value))
        except ValueError:
            return 0 if value.lower() in ("off", "false", "no") else DRAFT_TOKENS
    return 0 if device_type == "cuda" else DRAFT_TOKENS


class Lookup:
    """The ids of a sequence, indexed by their n-grams; `draft(k)` proposes up to k ids to follow,
    and each proposal is scored by the ids that do follow (`saved`: how many it got right, on
    average)."""

    def __init__(self, ids: list[int], skip: set[int] = frozenset(), references: Sequence[Sequence[int]] = ()):
        """`ids`: the prompt's; `references` (optional): ids the answer may repeat that are not in
        the prompt (OpenAI's `prediction`, a PDF page's text under its image), looked up too, before
        the prompt's (a later occurrence wins)."""
        self.skip = {*skip, SEPARATOR}
        self.ids = [t for r in references for t in (*r, SEPARATOR)] + list(ids)
        self.last: dict[tuple[int, ...], int] = {}  # n-gram -> where the ids after its last occurrence begin
        self.indexed = 0  # n-grams ending before this position are in `last`
        self.open: list[int] = []  # the last proposal, while the ids after it match it so far
        self.matched = 0  # of `open`, matched so far
        self.saved = SAVED_PRIOR  # moving average of the ids each proposal got right

    def append(self, token: int) -> None:
        self.ids.append(token)
        if self.open:
            if token == self.open[self.matched]:
                self.matched += 1
                if self.matched < len(self.open):
                    return
            self._score(self.matched)

    def proposing(self) -> bool:
        """A proposal is still being matched by the ids that follow it (no new one is made meanwhile)."""
        return bool(self.open)

    def paying(self, cost: float) -> bool:
        """Checking drafts saves more steps than it costs: `cost` is a step of 1 + k tokens against a
        step of one."""
        return self.saved > cost - 1.0

    def draft(self, k: int) -> list[int]:
        """Up to k ids that followed the last earlier occurrence of the longest suffix (MAX_NGRAM
        down to MIN_NGRAM ids); the proposal is then scored by the ids appended next."""
        ids, n_ids = self.ids, len(self.ids)
        self._index(n_ids - 1)  # every n-gram that ends before the last id: the earlier occurrences
        for n in range(MAX_NGRAM, MIN_NGRAM - 1, -1):
            if n_ids < n:
                continue
            at = self.last.get(tuple(ids[n_ids - n:]))
            if at is None:
                continue
            out = []
            for token in ids[at:at + k]:
                if token in self.skip:
                    break
                out.append(token)
            if out:
                self.open, self.matched = out, 0
                return out
        return []

    def _score(self, matched: int) -> None:
        self.saved += EMA * (matched - self.saved)
        self.open, self.matched = [], 0

    def _index(self, end: int) -> None:
        ids, skip = self.ids, self.skip
        for stop in range(self.indexed + 1, end + 1):  # the n-grams ending just before `stop`
            for n in range(MIN_NGRAM, MAX_NGRAM + 1):
                if stop - n < 0:
                    break
                gram = tuple(ids[stop - n:stop])
                if gram[-1] in skip or gram[0] in skip:
                    break
                self.last[gram] = stop
        self.indexed = max(self.indexed, end)


class StepCost:
    """What a step that checks drafts costs against a one-token step, from their measured times
    (moving averages; COST_PRIOR until both were timed, and where nothing is timed: StepTimer)."""

    def __init__(self, timed: bool):
        self.timed = timed
        self.one = self.checking = 0.0

    def add(self, seconds: float, checking: bool) -> None:
        if not self.timed:
            return
        old = self.checking if checking else self.one
        new = seconds if not old else old + EMA * (seconds - old)
        if checking:
            self.checking = new
        else:
            self.one = new

    @property
    def ratio(self) -> float:
        return self.checking / self.one if self.one and self.checking else COST_PRIOR


class StepTimer:
    """Times a generation's steps into a StepCost: on a CPU by the host's clock (the device is the
    host); on CUDA by events around the step, read at the next step (the device runs ahead of the
    host; by then the token read has waited for the step); elsewhere (a Mac) not at all."""

    def __init__(self, device_type: str):
        self.cost, self.kind = StepCost(timed=device_type in ("cpu", "cuda")), device_type
        self.began: float | object = 0.0
        self.pending = None  # CUDA: (start event, end event, checking) of the last step

    def begin(self) -> None:
        if self.kind == "cuda":
            import torch

            self._harvest()
            self.began = torch.cuda.Event(enable_timing=True)
            self.began.record()
        else:
            self.began = time.perf_counter()

    def end(self, checking: bool) -> None:
        if self.kind == "cuda":
            import torch

            stop = torch.cuda.Event(enable_timing=True)
            stop.record()
            self.pending = (self.began, stop, checking)
        else:
            self.cost.add(time.perf_counter() - self.began, checking)  # (untimed, a Mac: nothing)

    def _harvest(self) -> None:
        if self.pending is not None and self.pending[1].query():  # (not done yet: that one goes untimed)
            start, stop, checking = self.pending
            self.cost.add(start.elapsed_time(stop) / 1000, checking)
        self.pending = None


class Drafting:
    """One generation's drafts (generate.py): after each id it yields, `after` gives the logits for
    the next draw, from a step that checked that id as a draft when it was one, else from a step of
    its own, which also checks the ids drafted after it while drafts pay."""

    def __init__(self, lookup: Lookup, k: int, device_type: str):
        self.lookup, self.k, self.timer = lookup, k, StepTimer(device_type)
        self.cost = self.timer.cost
        self.queue: list[tuple[int, object]] = []  # (drafted id, the logits after it), checked
        self.drafted = self.accepted = 0  # ids checked, and of them drawn (each saved a step)

    def after(self, value: int, limit: int, alone: bool, one: Callable[[], object],
              check: Callable[[list[int]], object]):
        """`value`: the id just drawn; `limit`: ids still to be drawn; `alone`: no other generation
        is decoding (else its tokens go in their batched step: no drafts); `one()`: the logits after
        it from a one-token step; `check(drafts)`: the logits after it and after each draft (1 + k,
        V), from one step."""
        self.lookup.append(value)
        if self.queue and self.queue[0][0] == value:
            self.accepted += 1
            return self.queue.pop(0)[1]
        self.queue = []
        drafts = self.lookup.draft(min(self.k, limit)) if alone and not self.lookup.proposing() else []
        self.timer.begin()
        if not drafts or not self.lookup.paying(self.cost.ratio):  # (scored all the same: free)
            logits = one()
            if alone:  # (beside others, a step's time is theirs too)
                self.timer.end(checking=False)
            return logits
        out = check(drafts)
        self.timer.end(checking=True)
        self.drafted += len(drafts)
        self.queue = [(d, out[i + 1:i + 2]) for i, d in enumerate(drafts)]
        return out[:1]

    def forced(self, ids) -> None:
        """Ids fed in after the last one drawn (a think budget's): the checked drafts no longer follow."""
        self.queue = []
        for token in ids:
            self.lookup.append(token)


class RecentAnswers:
    """The last answers of a loaded model (their ids, RECENT_IDS at most), drafted from by the next
    questions: answers to like questions are alike (the same JSON keys for every file of an
    `--each --schema`, the same phrasing for every image of a batch). Shared by the threads that
    answer with the model."""

    def __init__(self, limit: int = RECENT_IDS):
        self.limit, self._lock = limit, threading.Lock()
        self._answers: list[list[int]] = []

    def add(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._lock:
            self._answers.append(list(ids[-self.limit:]))
            while sum(map(len, self._answers)) > self.limit:
                self._answers.pop(0)

    def clear(self) -> None:
        with self._lock:
            self._answers = []

    def snapshot(self) -> list[list[int]]:
        """Oldest first (a later answer's occurrence wins)."""
        with self._lock:
            return list(self._answers)
