"""How far a slow step has come, and how long it has left: the step feeds a Meter (done, total),
whoever shows the step watches it.

Reading a long prompt on a CPU takes minutes (a 12-megapixel photo is ~200 TFLOP for GLM-4.1V-9B,
model/work.py); a status line that only spins gives no way to tell a slow machine from a stuck
one. A Progress event carries a Meter; a renderer `watch`es it and is called back as the step
goes, at most every `every` seconds and only once the step has run SHOW_AFTER seconds (a GPU's
quick prompts never show a percentage).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

SHOW_AFTER = 1.0  # seconds before watchers first hear of a step
LEFT_AFTER = 0.02  # the share done before the time left is guessed (the first blocks run slow)


class Meter:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.started = clock()
        self.done = self.total = 0.0
        self._watchers: list[list] = []  # [fn, every, when it was last called]

    def watch(self, fn: Callable[[Meter], None], every: float = 0.25) -> None:
        """Call fn(meter) as the step goes, at most every `every` seconds."""
        self._watchers.append([fn, every, -math.inf])

    def __call__(self, done: float, total: float) -> None:
        self.done, self.total = done, total
        now = self.clock()
        if now - self.started < SHOW_AFTER:
            return
        for w in self._watchers:
            fn, every, last = w
            if now - last >= every:
                w[2] = now
                fn(self)

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total > 0 else 0.0

    def seconds_left(self) -> float | None:
        """At the pace so far; None until LEFT_AFTER of the work is done."""
        f = self.fraction
        if f < LEFT_AFTER:
            return None
        return (self.clock() - self.started) * (1 - f) / f

    def describe(self) -> str:
        """E.g. "37%, about 2 min left"."""
        text = f"{math.floor(100 * self.fraction)}%"
        left = self.seconds_left()
        return text if left is None or self.fraction >= 1 else f"{text}, about {_duration(left)} left"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, math.ceil(seconds))} s"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes / 60:.1f} h"
