"""Token generation: prefill the prompt into a preallocated KV cache, then decode one token at a
time, yielding ids as they are produced. Knows nothing of text or terminals.

Sampling follows transformers' order: repetition penalty, temperature, top-k, top-p, then a draw
from the device generator (temperature 0 is greedy). Sampling stays on the device; the only host
sync per token is reading the id to yield it; on CUDA the next step is queued before that read
and the read waits only for the id (an event after its copy to pinned memory), not for the step
queued behind it, so the device computes the next token while the host hands this one on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from glmv_cli.lookup import Drafting, Lookup, draft_tokens
from glmv_cli.model.glm4v import Glm4v

if TYPE_CHECKING:
    from glmv_cli.batching import DecodeBatcher
    from glmv_cli.prompt_cache import PromptCache


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from each token already generated
    frequency_penalty: float = 0.0  # OpenAI's: subtracted once per time it was generated

    @property
    def counts_tokens(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (1, V); seen (1, V) bool. Seen tokens: positive logits / penalty, negative * penalty."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def apply_presence_frequency(logits: torch.Tensor, counts: torch.Tensor, presence: float,
                             frequency: float) -> torch.Tensor:
    """OpenAI's penalties: logits (1, V) minus frequency * count, minus presence where count > 0;
    counts (1, V): how often each id was generated so far (the prompt's ids do not count)."""
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) everything outside the top-k and outside the smallest top-p nucleus."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative <= 1 - top_p
        drop_sorted[..., -1:] = False  # always keep the most likely token
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return logits


def next_token(logits: torch.Tensor, seen: torch.Tensor, s: Sampling, generator,
               allowed: torch.Tensor | None = None, counts: torch.Tensor | None = None) -> torch.Tensor:
    """(1, V) logits -> (1, 1) token id, on the logits' device; `allowed` (1, V) bool: the only ids
    it may be; `counts` (1, V): generated ids so far (for presence / frequency penalties)."""
    logits = logits.float()
    if s.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, seen, s.repetition_penalty)
    if counts is not None:
        logits = apply_presence_frequency(logits, counts, s.presence_penalty, s.frequency_penalty)
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    if s.greedy:
        return logits.argmax(-1, keepdim=True)
    logits = filter_top_k_top_p(logits / s.temperature, s.top_k, s.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)


CACHE_BUCKET = 256  # KV-cache lengths of a static step are rounded up to a multiple of this


def bucketed(cache_len: int) -> int:
    return CACHE_BUCKET * -(-cache_len // CACHE_BUCKET)


def compiled_step(model: Glm4v) -> Callable:
    """`model.decode_step` compiled with torch.compile (fullgraph, static shapes). On CPU with
    inductor's weight freezing (weights become constants the GEMM kernels can pre-pack; needs
    requires_grad off, as loaded models have). On CUDA without inductor's own CUDA graphs: the
    caller (cuda_graph.CudaGraphStep) captures the compiled step in its graph, with the KV cache
    it owns. Compilation happens on the first call and again for each new cache length; inductor
    keeps what it compiled on disk (TORCHINDUCTOR_CACHE_DIR, by default ~/.cache/glmv/inductor),
    so a second process compiles far less."""
    import os
    from pathlib import Path

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "glmv" / "inductor"))
    if model.device.type == "cpu":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    return torch.compile(model.decode_step, fullgraph=True, dynamic=False)


class StaticStep:
    """A one-token step with Glm4v.decode_step's signature and fixed shapes (the eager method or
    it compiled), run on a KV cache of a bucketed length: `begin(cache_len)` before the prompt,
    `end()` after the last token. Subclasses may keep the cache between requests (CUDA graphs)."""

    def __init__(self, model: Glm4v, fn: Callable):
        self.model, self.fn = model, fn

    def begin(self, cache_len: int) -> None:
        self.model.language_model.setup_cache(1, bucketed(cache_len))

    def __call__(self, token: torch.Tensor, input_pos: torch.Tensor, rope_delta: torch.Tensor) -> torch.Tensor:
        return self.fn(token, input_pos, rope_delta)

    def check(self, tokens: torch.Tensor, input_pos: torch.Tensor, rope_delta: torch.Tensor) -> torch.Tensor:
        """A token and the ids drafted after it (1, S) at [input_pos, input_pos + S) -> logits (S, V),
        in this step's cache (lookup.py): Glm4v.decode_step, eager (not compiled: one shape per S)."""
        return self.model.decode_step(tokens, input_pos, rope_delta)

    def end(self) -> None:
        self.model.language_model.drop_cache()


class Generation:
    """Iterates over generated token ids; the stop token itself is not yielded.

    `forced(token)` (optional) names ids to feed in after a yielded token as if the model had
    written them (e.g. "</think><answer>" when a think budget runs out); they are yielded too and
    count toward max_new_tokens. `steering` (optional) restricts what may be drawn: before each
    draw `steering.mask(device)` gives a (1, V) bool tensor of the ids allowed (or None: any), and
    `steering.feed(id)` is told every id that joins the sequence, forced ones included (e.g.
    app.answer_format.AnswerSteering). `logprobs` (optional, N >= 0): for each yielded id, `scores`
    gets (its log-probability, the N likeliest (id, log-probability)) under the model's own
    distribution (the raw logits: before penalties, masks and temperature), or None for a forced id.
    Once exhausted: `finish_reason` ("stop" | "length"),
    `prefill_seconds` (prompt in, first token out) and `decode_seconds` (the rest). From the
    start of iteration: `cached_tokens`, the prompt tokens a prompt cache held.
    """

    def __init__(self, model: Glm4v, inputs: dict, *, max_new_tokens: int, sampling: Sampling = Sampling(),
                 stop_ids: tuple[int, ...] = (), forced: Callable[[int], Sequence[int]] | None = None,
                 step: Callable | None = None, prompt_cache: PromptCache | None = None, steering=None,
                 logprobs: int | None = None, batcher: DecodeBatcher | None = None, draft: int | None = None,
                 references: Sequence[Sequence[int]] = (), progress: Callable[[float, float], None] | None = None):
        """`step`: a StaticStep (or a bare function with Glm4v.decode_step's signature, e.g. that
        method compiled, see compiled_step); None decodes with the eager Glm4v.decode.
        `prompt_cache`: the KV cache an earlier generation left (prompt_cache.py); the prompt's
        first tokens that it holds are not run again, and this generation leaves its own there.
        `batcher` (batching.py; with step None): the model is shared with generations on other
        threads; this one's decode steps run batched with theirs, the rest with the model alone.
        `draft`: ids looked up in the sequence so far and checked in the same step as each new
        token (lookup.py; None: lookup.draft_tokens's default for the device, 0: off); with a batcher
        only while no other generation is decoding; with a static step in its `check` (a CUDA
        graph's: one per width). The tokens are the ones drawn without drafts. `references`: ids
        the answer may repeat though they are not in the prompt (OpenAI's `prediction`, the text a
        PDF page's image shows, the last answers), drafted from too. `progress`: told how far the
        prompt has gone in, as Glm4v.prefill's (a status line's meter, app/meter.py)."""
        if step is not None and not isinstance(step, StaticStep):
            step = StaticStep(model, step)
        if batcher is not None and step is not None:
            raise ValueError("a batched generation decodes with the eager step (step=None)")
        self.model, self.inputs, self.forced, self.step = model, inputs, forced, step
        self.batcher, self.caches = batcher, None  # caches: this generation's own, with a batcher
        self.steering = steering
        self.logprobs, self.scores = logprobs, []  # scores: one entry per yielded id (see the class)
        self.prompt_cache = prompt_cache
        self.cached_tokens = 0  # prompt tokens the prompt cache held: not run again
        self._found = None  # what the prompt cache holds of the prompt (matched once per iteration)
        self._prompt: list[int] = []
        self._media: list = []
        self._matching_seconds = 0.0
        self.max_new_tokens, self.sampling, self.stop_ids = max_new_tokens, sampling, set(stop_ids)
        self.prompt_tokens = int(inputs["input_ids"].shape[1])
        self.finish_reason: str | None = None
        self.prefill_seconds = self.decode_seconds = 0.0
        self.draft, self.references = draft, [list(r) for r in references]
        self.progress = progress
        self._drafts: Drafting | None = None

    def __iter__(self) -> Iterator[int]:
        model, s = self.model, self.sampling
        device = model.lm_head.weight.device
        ids = self.inputs["input_ids"].to(device)
        generator = None
        if s.seed is not None:
            generator = torch.Generator(device=device).manual_seed(s.seed % 2**64)  # (any integer: torch's range)
        seen = torch.zeros(1, model.cfg.text.vocab_size, dtype=torch.bool, device=device)
        seen[0, ids[0]] = True
        counts = torch.zeros(1, model.cfg.text.vocab_size, device=device) if s.counts_tokens else None
        text, pc = model.language_model, self.prompt_cache
        cache_len = self.prompt_tokens + self.max_new_tokens
        found, batcher, joined = None, self.batcher, False
        if pc is not None:
            self._describe()  # (hashing the pixels: before taking the model)
        locked = batcher is not None and batcher.lock.acquire()  # from the prompt cache's match to the
        try:  # prompt held in this generation's cache, the model and the prompt cache to this thread
            if batcher is not None:
                text.caches = None
            if pc is not None:
                found, prompt, media = self._match(again=batcher is not None), self._prompt, self._media
                pc.set_aside(found)
            reuse = self.cached_tokens = self._allocate(cache_len, found)
            self.caches = text.caches
            if batcher is not None:
                batcher.live[id(self.caches)] = sum(c.k.nbytes + c.v.nbytes for c in self.caches)
        except BaseException:
            if locked:
                text.caches = None
                batcher.lock.release()
            raise
        start = time.perf_counter() - self._matching_seconds  # finding what the cache holds counts too
        try:
            if pc is not None:  # while the prompt goes in, the cache holds what was kept of the last one
                pc.hold(text.caches, prompt[:reuse], media)
            shared = {} if batcher is None else dict(chunk=batcher.prompt_chunk(),
                                                     pause=lambda: batcher.pause(self.caches))
            logits, delta = model.prefill(**{**self.inputs, "input_ids": ids}, start=reuse, progress=self.progress,
                                          **shared)
            if pc is not None:
                pc.hold(text.caches, prompt, media)
            if locked:
                text.caches = None
                locked = batcher.lock.release()  # (None)
                batcher.join()
                joined = True
            pos, step = self.prompt_tokens, 0
            delta_t = torch.tensor([delta], device=device)
            pos_t = torch.tensor([pos], device=device)

            def decode_one(token: torch.Tensor) -> torch.Tensor:  # (1, 1) -> next logits (1, V)
                if batcher is not None:
                    return batcher.step(token, pos, delta, self.caches)
                if self.step is None:
                    return model.decode(token, pos, delta)[:, -1]
                pos_t.fill_(pos)  # no host-to-device copy per token
                return self.step(token, pos_t, delta_t)

            lookup_k = self._draft_tokens()  # ids drafted a step (lookup.py), 0: none
            # CUDA: queue the next step before reading the id, and read the id through pinned
            # memory behind an event, so the step queued after it runs while the host hands it on
            # (steering needs each id first; log-probabilities are read from this step's logits;
            # drafts are looked up after each id)
            queue_early = (device.type == "cuda" and self.steering is None and self.logprobs is None
                           and not lookup_k)
            steer = self.steering
            drafts = self._drafting(ids, device, lookup_k) if lookup_k else None

            def advance(token: torch.Tensor, value: int) -> torch.Tensor:
                """The logits after `token` (its id `value`), drafts checked with it (lookup.py)."""
                if drafts is None:
                    return decode_one(token)

                def check(ids: list[int]) -> torch.Tensor:
                    row = torch.tensor([[value, *ids]], dtype=torch.long, device=device)
                    if self.step is not None:  # (a static step: its own cache and graphs)
                        pos_t.fill_(pos)
                        return self.step.check(row, pos_t, delta_t)
                    with self._alone():
                        return model.decode(row, pos, delta)[0]  # (1 + k, V)

                return drafts.after(value, self.max_new_tokens - step, batcher is None or batcher.decoding == 1,
                                    lambda: decode_one(token), check)

            if queue_early:
                host = torch.empty(1, dtype=torch.long, pin_memory=True)
                ready = torch.cuda.Event()
            while step < self.max_new_tokens:
                allowed = steer.mask(device) if steer is not None else None
                token = next_token(logits, seen, s, generator, allowed, counts)  # (1, 1)
                scored = self._score(logits, token) if self.logprobs is not None else None
                if queue_early:
                    host.copy_(token.view(1), non_blocking=True)
                    ready.record(torch.cuda.current_stream(device))
                seen.scatter_(1, token, True)  # (indexing with a device tensor could wait for it)
                if counts is not None:
                    counts.scatter_add_(1, token, torch.ones_like(token, dtype=counts.dtype))
                step += 1
                more = step < self.max_new_tokens
                if more and queue_early:
                    logits = decode_one(token)
                if queue_early:
                    ready.synchronize()
                    value = int(host[0])
                    if more and pc is not None:
                        pc.fed(value, self.caches)
                else:
                    value = int(token)
                if step == 1:
                    self.prefill_seconds, start = time.perf_counter() - start, time.perf_counter()
                if value in self.stop_ids:
                    self.finish_reason = "stop"
                    return
                if steer is not None:
                    steer.feed(value)
                if scored is not None:
                    self.scores.append(scored)
                yield value
                if more and not queue_early:
                    logits = advance(token, value)
                    if pc is not None:
                        pc.fed(value, self.caches)
                pos += 1
                extra = tuple(self.forced(value))[: self.max_new_tokens - step] if self.forced else ()
                if extra:
                    row = torch.tensor([extra], dtype=torch.long, device=device)  # (1, F)
                    seen[0, row[0]] = True
                    if counts is not None:
                        counts.scatter_add_(1, row, torch.ones_like(row, dtype=counts.dtype))
                    with self._alone():
                        logits = model.decode(row, pos, delta)[:, -1]
                    if drafts is not None:
                        drafts.forced(extra)
                    if pc is not None:
                        for forced in extra:
                            pc.fed(forced, self.caches)
                    pos, step = pos + len(extra), step + len(extra)
                    for forced in extra:
                        if steer is not None:
                            steer.feed(forced)
                        if self.logprobs is not None:
                            self.scores.append(None)  # (not drawn: no distribution of the model's)
                        yield forced
            self.finish_reason = "length"
        except Exception:
            if pc is not None:  # (out of memory, most often: free the cache too)
                with self._alone():
                    pc.clear()
            raise
        finally:
            if locked:  # (the prompt failed)
                text.caches = None
                batcher.lock.release()
            self._found = None  # (iterating again matches again: the prompt cache has changed)
            if self.prefill_seconds:
                self.decode_seconds = time.perf_counter() - start
            if batcher is not None:  # (the model holds no cache between a batcher's calls)
                if joined:
                    batcher.leave(self.caches)
                batcher.live.pop(id(self.caches), None)
            elif self.step is not None:
                self.step.end()
            else:
                text.drop_cache()

    def _draft_tokens(self) -> int:
        return draft_tokens(self.model.device.type) if self.draft is None else self.draft

    def _drafting(self, ids: torch.Tensor, device: torch.device, k: int) -> Drafting:
        cfg = self.model.cfg
        media = {cfg.image_token_id, cfg.video_token_id, cfg.image_start_token_id, cfg.image_end_token_id,
                 cfg.video_start_token_id, cfg.video_end_token_id}
        self._drafts = Drafting(Lookup(ids[0].tolist(), skip=media, references=self.references), k,
                                device.type)
        return self._drafts

    @property
    def drafted(self) -> int:
        """Ids drafted and checked (lookup.py), in the last iteration."""
        return self._drafts.drafted if self._drafts is not None else 0

    @property
    def accepted(self) -> int:
        """Of the ids drafted, those drawn: each saved a step."""
        return self._drafts.accepted if self._drafts is not None else 0

    def _alone(self):
        """The model to this generation alone, its own cache in it (with a batcher; else as it is)."""
        return nullcontext() if self.batcher is None else self.batcher.exclusive(self.caches)

    def _score(self, logits: torch.Tensor, token: torch.Tensor) -> tuple[float, list[tuple[int, float]]]:
        """(log p(token), the `logprobs` likeliest (id, log p)) under the raw logits (1, V)."""
        lp = torch.log_softmax(logits.float(), dim=-1)  # (1, V)
        chosen = float(lp[0, int(token)])
        if not self.logprobs:
            return chosen, []
        top = torch.topk(lp[0], min(self.logprobs, lp.shape[-1]))
        return chosen, list(zip(top.indices.tolist(), top.values.tolist(), strict=True))

    def held(self) -> int:
        """How many of the prompt's first tokens the prompt cache holds (before generating: for a
        progress line; generation then runs only the rest)."""
        return self._match().n if self.prompt_cache is not None else 0

    def _match(self, again: bool = False):
        """What the prompt cache holds of this prompt (prompt_cache.Found), matched once (`again`:
        anew, since generations on other threads may have changed the prompt cache meanwhile)."""
        if self._found is None or again:
            self._describe()
            with self.batcher.lock if self.batcher is not None else nullcontext():
                self._found = self.prompt_cache.find(self._prompt, self._media)
        return self._found

    def _describe(self) -> None:
        """The prompt's ids and its images' and videos' digests, for the prompt cache (once)."""
        if self._prompt:
            return
        from glmv_cli.prompt_cache import prompt_media

        began = time.perf_counter()
        ids = self.inputs["input_ids"]
        types = self.inputs.get("mm_token_type_ids")
        self._media = prompt_media(self.inputs, (types if types is not None else self.model.token_types(ids)).cpu())
        self._prompt = ids[0].tolist()
        self._matching_seconds = time.perf_counter() - began

    def _allocate(self, cache_len: int, found) -> int:
        """The KV cache for this generation, on the model, with the first `found.n` positions of
        what the prompt cache matched (prompt_cache.Found) in it: the working cache itself when it
        matched and is big enough, else a copy. Returns how many it holds (0 when keeping them left
        no room for this generation)."""
        pc, text = self.prompt_cache, self.model.language_model
        reuse = found.n if found is not None else 0
        if pc is not None and (not reuse or found.source is not None):
            pc.drop_working()  # nothing in it to keep: free it before allocating
        kept = pc.caches if reuse else None
        try:
            if self.step is not None:  # a static step allocates (or keeps) its own
                self._check_host_room(cache_len)
                self.step.begin(cache_len)
            elif kept is not None and pc.capacity >= cache_len and not self._in_use(kept):
                text.caches = kept
            else:
                if kept is None:  # the last request's cache goes before this one takes its memory
                    text.drop_cache()
                self._check_host_room(cache_len)
                text.setup_cache(1, cache_len)
        except RuntimeError as e:
            from glmv_cli.memory import is_out_of_memory

            if pc is None or not is_out_of_memory(e) or not (pc.caches or pc.snapshots):
                raise
            pc.clear()  # what it kept and this cache do not fit together: start afresh
            return self._allocate(cache_len, None)
        if reuse and text.caches is not kept:
            pc.copy_into(text.caches, found)
        text.caches[0].holder = pc  # whose ids describe this cache (prompt_cache.py)
        return reuse

    def _in_use(self, caches: list) -> bool:
        """Whether another generation (decoding beside this one) is writing into `caches`."""
        return self.batcher is not None and id(caches) in self.batcher.live

    def _check_host_room(self, cache_len: int) -> None:
        """On a CPU, a KV cache the host cannot hold fails as an allocator's out-of-memory error:
        torch's zeroed pages would be taken one by one until Linux's OOM killer ended the process
        (a bare "Killed", a chat's history lost), not refused."""
        text = self.model.language_model
        if text.norm.weight.device.type != "cpu":
            return
        from glmv_cli.memory import device_room, size

        positions = bucketed(cache_len) if self.step is not None else cache_len  # (StaticStep.begin's)
        need = text.cfg.kv_bytes(positions, text.norm.weight.dtype.itemsize)
        room = device_room(text.norm.weight.device)
        # the caches of generations running beside this one: zeroed pages the host has not handed
        # out yet, so the free memory does not show them (counted whole: written parts twice)
        others = self.batcher.live_bytes() if self.batcher is not None else 0
        if room is not None and need + others > room.free:
            raise torch.cuda.OutOfMemoryError(f"CPU out of memory: the KV cache for {positions:,} positions. "
                                              f"Tried to allocate {size(need)}")
