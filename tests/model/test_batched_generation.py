"""Generations on several threads sharing one model through a DecodeBatcher: their steps run
batched, and each yields exactly the tokens it yields alone (greedy, seeded sampling, tokens
forced in, a shared prompt cache)."""

from __future__ import annotations

import threading

import pytest
import torch

from glmv_cli.batching import DecodeBatcher
from glmv_cli.generate import Generation, Sampling
from glmv_cli.prompt_cache import PromptCache
from tests.model.conftest import extended, model_kwargs


def forcing(after: int, ids: tuple[int, ...]):
    """A `forced` callback feeding `ids` in once, after the `after`-th yielded token."""
    seen = []

    def forced(token: int):
        seen.append(token)
        return ids if len(seen) == after else ()

    return forced


def jobs(prompt_inputs):
    return [
        dict(inputs=model_kwargs(prompt_inputs("image")), max_new_tokens=24, sampling=Sampling()),
        dict(inputs=model_kwargs(prompt_inputs("text")), max_new_tokens=40,
             sampling=Sampling(temperature=1.2, top_p=0.9, seed=5)),
        dict(inputs=model_kwargs(prompt_inputs("video")), max_new_tokens=17, sampling=Sampling(),
             forced=(3, (11, 12, 13))),
        dict(inputs=model_kwargs(prompt_inputs("images")), max_new_tokens=30,
             sampling=Sampling(temperature=0.8, top_k=20, seed=9, repetition_penalty=1.3)),
    ]


def generation(glm, job: dict, **kwargs) -> Generation:
    forced = forcing(*job["forced"]) if "forced" in job else None
    return Generation(glm.model, job["inputs"], max_new_tokens=job["max_new_tokens"], sampling=job["sampling"],
                      forced=forced, **kwargs)


def concurrently(make, n: int) -> list:
    """Iterate `make(i)` for i < n on n threads started together -> each one's tokens."""
    out, errors = [None] * n, []
    start = threading.Barrier(n)

    def work(i):
        try:
            g = make(i)
            start.wait()
            out[i] = list(g)
        except BaseException as e:  # noqa: BLE001  (re-raised below, in the test's thread)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if errors:
        raise errors[0]
    return out


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("rows", [4, 2])
def test_concurrent_generations_yield_what_each_yields_alone(glm, prompt_inputs, rows):
    todo = jobs(prompt_inputs)
    alone = [list(generation(glm, job)) for job in todo]
    batcher = DecodeBatcher(glm.model, rows=rows, wait_s=1.0)
    together = concurrently(lambda i: generation(glm, todo[i], batcher=batcher), len(todo))
    assert together == alone
    assert batcher.widest == rows  # the steps did run batched, never wider than asked
    assert batcher.row_steps / batcher.steps > 1.5
    assert batcher.decoding == 0 and not batcher.live  # every generation left
    assert glm.model.language_model.caches is None


def test_a_shared_prompt_cache_serves_the_next_turn(glm, prompt_inputs, follow_up):
    todo = jobs(prompt_inputs)
    alone = [list(generation(glm, job)) for job in todo]
    cache = PromptCache()
    batcher = DecodeBatcher(glm.model, rows=4, wait_s=1.0)
    together = concurrently(lambda i: generation(glm, todo[i], batcher=batcher, prompt_cache=cache), len(todo))
    assert together == alone
    # the next turn of one of them, after the others: its prompt comes from a kept cache, and the
    # tokens are those of a run without any cache
    image = todo[0]["inputs"]
    turn = extended(image, torch.cat([torch.tensor([alone[0]]), follow_up], dim=1))
    fresh = list(Generation(glm.model, turn, max_new_tokens=12))
    again = Generation(glm.model, turn, max_new_tokens=12, prompt_cache=cache, batcher=batcher)
    assert list(again) == fresh
    assert again.cached_tokens > 0  # (what is kept depends on the order the threads took the model in)
    # while one generation writes into the working cache, another that begins the same way gets a
    # copy of what it shares, and writes its own continuation into its own cache
    batcher = DecodeBatcher(glm.model, rows=4, wait_s=0.01)  # (first is not read while second runs)
    other = extended(image, follow_up)
    other_fresh = list(Generation(glm.model, other, max_new_tokens=12))
    first = Generation(glm.model, turn, max_new_tokens=12, prompt_cache=cache, batcher=batcher)
    second = Generation(glm.model, other, max_new_tokens=12, prompt_cache=cache, batcher=batcher)
    it = iter(first)
    head = [next(it)]
    assert list(second) == other_fresh and second.cached_tokens >= image["input_ids"].shape[1]
    assert head + list(it) == fresh


def test_a_reader_that_stops_reading_holds_up_no_one(glm, prompt_inputs):
    todo = jobs(prompt_inputs)
    batcher = DecodeBatcher(glm.model, rows=4, wait_s=0.01)
    stalled = iter(generation(glm, todo[0], batcher=batcher))
    next(stalled)  # joined, then not read on
    assert batcher.decoding == 1
    assert list(generation(glm, todo[1], batcher=batcher)) == list(generation(glm, todo[1]))
    stalled.close()
    assert batcher.decoding == 0


def test_an_error_in_a_step_reaches_every_row(glm, prompt_inputs, monkeypatch):
    todo = jobs(prompt_inputs)[:2]
    batcher = DecodeBatcher(glm.model, rows=2, wait_s=1.0)

    def broken(*args, **kwargs):
        raise torch.OutOfMemoryError("CPU out of memory (injected)")

    monkeypatch.setattr(glm.model, "decode_rows", broken)
    monkeypatch.setattr(glm.model, "decode", broken)
    with pytest.raises(torch.OutOfMemoryError):
        concurrently(lambda i: generation(glm, todo[i], batcher=batcher), 2)
    assert batcher.decoding == 0 and not batcher.live


def test_steps_longer_than_the_wait_keep_generations_in_step(glm, prompt_inputs, monkeypatch):
    """A step that takes longer than wait_s (a real model on a CPU: 0.1 s and more) must not part
    two generations: the one waiting while the other's step runs is not 'held up'. The second
    joins while the first is decoding, and from then on their rows go together."""
    from tests.cli.conftest import slow_steps

    todo = jobs(prompt_inputs)
    batcher = DecodeBatcher(glm.model, rows=4, wait_s=0.005)
    slow_steps(monkeypatch, 0.03)
    first = iter(generation(glm, dict(todo[0], max_new_tokens=40), batcher=batcher))
    head = [next(first) for _ in range(3)]
    out = {}
    second = threading.Thread(target=lambda: out.setdefault("second", list(generation(glm, todo[3],
                                                                                       batcher=batcher))))
    second.start()
    rest = list(first)
    second.join(60)
    monkeypatch.undo()
    assert head + rest == list(generation(glm, dict(todo[0], max_new_tokens=40)))
    assert out["second"] == list(generation(glm, todo[3]))
    together = batcher.row_steps - batcher.steps  # steps that held two rows
    assert together >= todo[3]["max_new_tokens"] - 3


def test_a_long_prompt_lets_the_others_decode_between_its_chunks(glm, prompt_inputs, monkeypatch):
    """A prompt read while another generation decodes goes in SHARED_CHUNK tokens at a time, the
    other's steps running between its chunks; both still yield their tokens alone."""
    from glmv_cli import batching

    monkeypatch.setattr(batching, "SHARED_CHUNK", 8)
    todo = jobs(prompt_inputs)  # todo[3]: three images, 94 tokens: 12 chunks of 8
    during = steps_while(glm, monkeypatch, "prefill", dict(todo[1], max_new_tokens=60), todo[3])
    assert during >= 5  # the first generation's steps ran between the chunks (at most 11 pauses)


def steps_while(glm, monkeypatch, method: str, decoding: dict, arriving: dict) -> int:
    """Start `decoding`, then while it decodes on a thread of its own run `arriving`: both must
    yield their tokens alone; returns how many of the first one's steps ran during the second's
    call of Glm4v.`method` (its prompt going in)."""
    from glmv_cli.model import glm4v

    batcher = DecodeBatcher(glm.model, rows=4, wait_s=0.05)
    first = iter(generation(glm, decoding, batcher=batcher))
    head = [next(first)]
    during, plain = [], getattr(glm4v.Glm4v, method)

    def watched(self, *args, **kwargs):
        before = batcher.steps
        out = plain(self, *args, **kwargs)
        during.append(batcher.steps - before)
        return out

    monkeypatch.setattr(glm4v.Glm4v, method, watched)
    out = {}
    reader = threading.Thread(target=lambda: out.setdefault("first", head + list(first)))
    second = generation(glm, arriving, batcher=batcher)
    reader.start()
    got = list(second)
    reader.join(60)
    monkeypatch.setattr(glm4v.Glm4v, method, plain)
    assert got == list(generation(glm, arriving))
    assert out["first"] == list(generation(glm, decoding))
    return during[0]

def test_the_host_room_check_counts_the_caches_of_the_others(glm, prompt_inputs, monkeypatch):
    """On a CPU a fresh KV cache is zeroed pages the host hands out only as they are written, so the
    free memory does not show the caches of generations running beside a new one: the check before
    allocating counts them."""
    from glmv_cli import memory

    todo = jobs(prompt_inputs)
    batcher = DecodeBatcher(glm.model, rows=4, wait_s=0.01)
    running = iter(generation(glm, todo[0], batcher=batcher))
    next(running)
    others = batcher.live_bytes()
    job = todo[1]
    text = glm.model.language_model
    need = text.cfg.kv_bytes(job["inputs"]["input_ids"].shape[1] + job["max_new_tokens"], 4)
    assert others > 0 and need > 0
    monkeypatch.setattr(memory, "device_room", lambda device: memory.Room(need + others - 1, 10 * (need + others)))
    with pytest.raises(torch.OutOfMemoryError, match="KV cache"):
        list(generation(glm, job, batcher=batcher))
    monkeypatch.setattr(memory, "device_room", lambda device: memory.Room(need + others, 10 * (need + others)))
    assert list(generation(glm, job, batcher=batcher)) == list(generation(glm, job))
    running.close()
    assert not batcher.live


def test_what_the_cache_holds_is_matched_again_when_the_prompt_goes_in(glm, prompt_inputs):
    """A Session asks `held()` for its progress line before iterating; by the time the prompt goes
    in, generations beside it may have changed the prompt cache (taken a snapshot back, handed the
    working cache on): the match is made again then, under the model's lock, or a prompt would
    start from another prompt's keys and values."""
    todo = jobs(prompt_inputs)
    pair = [dict(todo[0], max_new_tokens=16), dict(todo[3], max_new_tokens=16)]  # one image; three, the
    order = [pair[i % 2] for i in range(6)]  # first of them the same: their prompts share a prefix
    alone = [list(generation(glm, job)) for job in order]
    cache = PromptCache()
    batcher = DecodeBatcher(glm.model, rows=4, wait_s=0.05)
    made = [generation(glm, job, batcher=batcher, prompt_cache=cache) for job in order]
    list(made[0])  # the cache holds a prompt when the others look
    for g in made[1:]:
        g.held()
    assert concurrently(lambda i: made[i + 1], 5) == alone[1:]


def test_steps_as_graphs_one_per_set_of_generations(glm, prompt_inputs):
    """With RowGraphs (CUDA graphs on a GPU; here EagerGraph, the same bookkeeping): every step of a
    set of generations runs in the graph captured for that set, the answers are those alone, and
    a generation that leaves takes its graphs with it."""
    from glmv_cli.batch_graphs import EagerGraph, RowGraphs

    todo = jobs(prompt_inputs)
    alone = [list(generation(glm, job)) for job in todo]
    graphs = RowGraphs(glm.model, make_graph=EagerGraph)
    batcher = DecodeBatcher(glm.model, rows=4, wait_s=1.0, graphs=graphs)
    together = concurrently(lambda i: generation(glm, todo[i], batcher=batcher), len(todo))
    assert together == alone
    # one capture per set: the four together, then fewer as each one ends (and some lone ones)
    assert 1 <= graphs.captures <= 8 and batcher.steps > 3 * graphs.captures
    assert not graphs.graphs  # every generation left: no graph keeps a cache alive
    lone = generation(glm, todo[0], batcher=batcher)
    assert list(lone) == alone[0] and graphs.captures <= 9


def test_others_decode_between_the_vision_towers_groups_of_a_new_prompt(glm, prompt_inputs, monkeypatch):
    """A prompt's images go through the vision tower a group of patches at a time; while others
    decode, their steps run between the groups too (a PDF's pages on a CPU take seconds each)."""
    from glmv_cli.model import vision

    monkeypatch.setattr(vision, "GROUP_PATCHES", 100)  # the three images (up to 140 patches): three groups
    todo = jobs(prompt_inputs)
    during = steps_while(glm, monkeypatch, "embed", dict(todo[1], max_new_tokens=60), todo[3])
    assert during >= 2  # steps of the first generation between the second's groups of patches


def test_threads_asking_for_the_batcher_at_once_get_the_same_one(tiny_folder):
    """The first questions of several threads make the batcher at the same moment: one for all (two
    would let two steps use the model at once)."""
    import glmv_cli

    glm = glmv_cli.load(tiny_folder, device="cpu", dtype="float32")
    start, got = threading.Barrier(8), []

    def ask():
        start.wait()
        got.append(glm.batcher(4))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(b is got[0] for b in got)
