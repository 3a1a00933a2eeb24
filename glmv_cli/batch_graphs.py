"""Decode steps of several rows as CUDA graphs: one graph per set of generations decoding together.

On CUDA an eager step launches thousands of small kernels and the GPU waits on the host between
them (GLM-4.1V-9B: 18.6 tokens/s eager against 134.7 in the one-request graph of cuda_graph.py), so
rows decoded together (batching.py) pay only once they run in a graph too. Each generation keeps its
own KV cache, so a graph is captured for one set of caches, in one order: `Glm4v.decode_rows_static`
over them (fixed shapes; positions and rope deltas as tensors copied in before each replay). The
set changes only when a request starts or ends, and a capture costs a few hundredths of a second;
the last `keep` graphs are kept (a generation that leaves takes the graphs holding its cache with
it), all in one memory pool since only one runs at a time.

The capture's warm-up call is the step itself (the real inputs, the keys and values written where
they belong), so a new set's first step costs its capture and no more. `EagerGraph` is the same
bookkeeping without CUDA (the tests run it on the CPU); a capture that fails for another reason
than memory turns the graphs off, with a warning, and the steps run eagerly.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import torch

from glmv_cli.memory import is_out_of_memory

log = logging.getLogger(__name__)

KEEP = 4  # graphs kept (sets of generations seen lately)
WARMUP_CALLS = 2  # as cuda_graph.py's


class EagerGraph:
    """A stand-in for torch.cuda.CUDAGraph with the same use: `warm(fn)` runs the step once and
    returns its output; `capture(fn)` records it; `replay()` refreshes `out` from the static inputs."""

    def warm(self, fn):
        return fn()

    def capture(self, fn) -> None:
        self.fn = fn
        self.out = fn()

    def replay(self) -> None:
        self.out.copy_(self.fn())


class CudaGraph(EagerGraph):
    def __init__(self, device: torch.device, pool):
        self.device, self.pool = device, pool

    def warm(self, fn):
        """The step, twice, on a side stream (lazy initialisation, Triton's autotuning); the second
        writes the same keys and values again."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                out = fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        return out

    def capture(self, fn) -> None:
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=self.pool):
            self.out = fn()

    def replay(self) -> None:
        self.graph.replay()


class _Captured:
    def __init__(self, graph, tokens, pos, delta, caches):
        self.graph, self.tokens, self.pos, self.delta, self.caches = graph, tokens, pos, delta, caches


class RowGraphs:
    def __init__(self, model, make_graph=None, keep: int = KEEP):
        self.model, self.keep = model, keep
        if make_graph is None:
            pool = torch.cuda.graph_pool_handle()
            make_graph = lambda: CudaGraph(model.device, pool)  # noqa: E731
        self.make_graph = make_graph
        self.graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        self.captures, self.capture_seconds, self.failed = 0, 0.0, False

    def run(self, rows: list) -> torch.Tensor:
        """Logits (B, V) for batching._Row-s (token, pos, delta, caches), in their order."""
        order = sorted(range(len(rows)), key=lambda i: id(rows[i].caches))
        ordered = [rows[i] for i in order]
        device = self.model.device
        tokens = torch.cat([r.token for r in ordered]).to(device)
        pos = torch.tensor([r.pos for r in ordered], device=device)
        delta = torch.tensor([r.delta for r in ordered], device=device)
        caches = [r.caches for r in ordered]
        if self.failed:
            logits = self.model.decode_rows_static(tokens, pos, delta, caches)
        else:
            logits = self._replay(tuple(id(c) for c in caches), tokens, pos, delta, caches)
        back = torch.empty(len(rows), dtype=torch.long)
        back[torch.tensor(order)] = torch.arange(len(rows))
        return logits.index_select(0, back.to(logits.device))  # (a copy: the next replay overwrites `out`)

    def forget(self, caches: list) -> None:
        """A generation left: the graphs that hold its cache go (and with them the cache's memory)."""
        for key in [k for k in self.graphs if id(caches) in k]:
            del self.graphs[key]

    @torch.no_grad()
    def _replay(self, key: tuple, tokens, pos, delta, caches) -> torch.Tensor:
        captured = self.graphs.get(key)
        if captured is not None:
            self.graphs.move_to_end(key)
            captured.tokens.copy_(tokens)
            captured.pos.copy_(pos)
            captured.delta.copy_(delta)
            captured.graph.replay()
            return captured.graph.out
        began = time.perf_counter()
        graph = self.make_graph()

        def step():
            return self.model.decode_rows_static(tokens, pos, delta, caches)

        try:
            first = graph.warm(step)  # this step's logits: the keys and values go where they belong
            graph.capture(step)
        except RuntimeError as e:
            if is_out_of_memory(e):
                raise
            self.failed = True
            self.graphs.clear()
            log.warning("could not capture a decode step of %d rows as a CUDA graph (%s); decoding them "
                        "without it", len(caches), str(e).splitlines()[0])
            return step()
        self.graphs[key] = _Captured(graph, tokens, pos, delta, caches)
        while len(self.graphs) > self.keep:
            self.graphs.popitem(last=False)
        self.captures += 1
        self.capture_seconds += time.perf_counter() - began
        return first
