"""The one-token decode step as a CUDA graph: captured once per KV-cache length, then replayed.

Batch-1 decoding launches a few thousand small kernels per token; launched one by one from
Python, the GPU waits on the host between them (the issue that brought this measured 18.6 tok/s
eager against 134.7 in a graph for GLM-4.1V-9B's shapes on an H200). A CUDA graph records the whole
step once and replays it with one launch. Graphs bake in every pointer, so the step owns what it
reads and writes between replays:

* static inputs (the token, its cache position, the rope delta), copied into before each replay;
* the KV cache itself, allocated at capture and *kept* between requests of the same bucketed
  length (a Session answering many questions captures once); `begin` hands it to the model,
  `end` takes it back. A request of another length frees the old graph and cache first;
* the output logits, valid until the next replay (sampling reads them before that).

The step captured is Glm4v.decode_step (fixed shapes: attention reads the whole cache under a
mask) or that step compiled by inductor (generate.compiled_step), so `--compile` adds fused
kernels on top of the same graph. No torch.compile is needed for the graph itself.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import torch

from glmv_cli.generate import StaticStep, bucketed
from glmv_cli.memory import is_out_of_memory
from glmv_cli.model.glm4v import Glm4v

log = logging.getLogger(__name__)

WARMUP_CALLS = 2  # before capture, on a side stream (lazy initialisation, autotuning, compiling)


def graphs_enabled(device: torch.device) -> bool:
    """CUDA graphs are the default decode step on CUDA; GLMV_CUDA_GRAPHS=0 turns them off."""
    return device.type == "cuda" and os.environ.get("GLMV_CUDA_GRAPHS", "1") != "0"


class CudaGraphStep(StaticStep):
    def __init__(self, model: Glm4v, fn: Callable | None = None):
        super().__init__(model, fn or model.decode_step)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.cache_len = 0
        self.caches = None
        self.capture_seconds = 0.0  # of the last capture, warm-up included
        self.failed = False  # a capture failed: the step runs eagerly (a StaticStep) from then on
        self.checks: dict[int, tuple | None] = {}  # S -> (graph, its tokens): a token, S - 1 drafts (lookup.py)

    def begin(self, cache_len: int) -> None:
        if self.failed:
            return super().begin(cache_len)
        length = bucketed(cache_len)
        if self.graph is None or length != self.cache_len:
            self.release()
            try:
                self._capture(length)
            except RuntimeError as e:  # an operation that cannot be captured here: decode without the graph
                self.release()
                if is_out_of_memory(e):  # this request's cache was too big: the next one captures again
                    raise
                self.failed = True
                log.warning("could not capture the decode step as a CUDA graph (%s); decoding without it, "
                            "slower (GLMV_CUDA_GRAPHS=0 skips the attempt)", str(e).splitlines()[0])
                return super().begin(cache_len)
        self.model.language_model.caches = self.caches

    def __call__(self, token: torch.Tensor, input_pos: torch.Tensor, rope_delta: torch.Tensor) -> torch.Tensor:
        if self.failed:
            return self.fn(token, input_pos, rope_delta)
        self.token.copy_(token)
        self.input_pos.copy_(input_pos)
        self.rope_delta.copy_(rope_delta)
        self.graph.replay()
        return self.logits

    def check(self, tokens: torch.Tensor, input_pos: torch.Tensor, rope_delta: torch.Tensor) -> torch.Tensor:
        """A token and the ids drafted after it (1, S) -> logits (S, V), from a graph of its own for
        each S over the same cache, captured at its first use (valid until the next replay)."""
        S = tokens.shape[1]
        if self.failed or self.graph is None:
            return super().check(tokens, input_pos, rope_delta)
        if S not in self.checks:
            try:
                self.checks[S] = self._capture_check(S)
            except RuntimeError as e:
                if is_out_of_memory(e):
                    raise
                self.checks[S] = None
                log.warning("could not capture the %d-token decode step as a CUDA graph (%s); checking drafts "
                            "without it", S, str(e).splitlines()[0])
        if self.checks[S] is None:
            return super().check(tokens, input_pos, rope_delta)
        graph, static = self.checks[S]
        static.copy_(tokens)
        self.input_pos.copy_(input_pos)
        self.rope_delta.copy_(rope_delta)
        graph.replay()
        return graph.out

    def end(self) -> None:
        self.model.language_model.drop_cache()  # the step keeps the cache for the next request

    def release(self) -> None:
        """Free the graph and its cache (before a capture of another length)."""
        self.graph = self.caches = self.logits = None
        self.checks = {}
        self.cache_len = 0
        self.model.language_model.drop_cache()

    @torch.no_grad()
    def _capture_check(self, S: int) -> tuple:
        """The S-token step as a graph over the cache in use. Its warm-up runs write at the end of
        the cache, where no token is yet (a position is written by its own step before it is read)."""
        from glmv_cli.batch_graphs import CudaGraph

        tokens = torch.zeros(1, S, dtype=torch.long, device=self.model.device)
        self.input_pos.fill_(self.cache_len - S)
        graph = CudaGraph(self.model.device, pool=None)  # (its own memory: a graph's output outlives others' replays)
        step = lambda: self.model.decode_step(tokens, self.input_pos, self.rope_delta)  # noqa: E731
        graph.warm(step)
        graph.capture(step)
        log.info("captured the %d-token decode step (a token and its drafts)", S)
        return graph, tokens

    @torch.no_grad()
    def _capture(self, length: int) -> None:
        start = time.perf_counter()
        model, device = self.model, self.model.device
        model.language_model.setup_cache(1, length)
        self.caches = model.language_model.caches
        self.token = torch.zeros(1, 1, dtype=torch.long, device=device)
        self.input_pos = torch.zeros(1, dtype=torch.long, device=device)  # warm-up writes land at 0,
        self.rope_delta = torch.zeros(1, dtype=torch.long, device=device)  # which the prompt overwrites
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self.fn(self.token, self.input_pos, self.rope_delta)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self.fn(self.token, self.input_pos, self.rope_delta)
        self.graph, self.cache_len = graph, length
        self.capture_seconds = time.perf_counter() - start
        log.info("captured the decode step for a %d-token cache in %.3f s", length, self.capture_seconds)
