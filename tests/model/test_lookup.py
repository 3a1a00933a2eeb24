"""Prompt lookup decoding (lookup.py): drafted ids checked in one step with the token before them
change nothing of what is generated (greedy, seeded sampling, forced ids, a steering mask, log-
probabilities, a reused prompt cache, the last tokens of the budget), and save steps."""

from __future__ import annotations

import pytest
import torch

from glmv_cli.generate import Generation, Sampling
from glmv_cli.lookup import Lookup, StepCost, draft_tokens
from tests.model.conftest import extended, model_kwargs

MEDIA = {900, 901}
MEASURED = StepCost.ratio  # (before the fixture below holds it at the prior)


@pytest.fixture(autouse=True)
def steps_cost_the_prior(monkeypatch):
    """Whether drafts are checked depends on measured step times: held at the prior here, so that
    it depends on the drafts' scores alone (the same on any machine)."""
    from glmv_cli import lookup

    monkeypatch.setattr(lookup.StepCost, "ratio", property(lambda self: lookup.COST_PRIOR))


def test_a_draft_is_what_followed_the_last_earlier_occurrence_of_the_longest_suffix():
    ids = [1, 2, 3, 7, 8, 9, 2, 3, 5, 6, 1, 2, 3]
    lookup = Lookup(ids)
    # (1, 2, 3) occurred at the start (then 7, 8); (2, 3) last at 6-7 (then 5, 6): the longer wins
    assert lookup.draft(2) == [7, 8]
    lookup.append(7)
    assert lookup.draft(4) == [8, 9, 2, 3]  # (2, 3, 7) occurred once: at 1-3
    lookup.append(4)
    assert lookup.draft(4) == []  # (7, 4) and (3, 7, 4)... never occurred before; one id alone drafts nothing


def test_the_most_recent_occurrence_wins_and_the_suffix_never_matches_itself():
    lookup = Lookup([5, 6, 1, 5, 6, 2, 5, 6])
    assert lookup.draft(3) == [2, 5, 6]
    assert Lookup([5, 6]).draft(3) == []


def brute_draft(ids: list[int], skip: set[int], k: int) -> list[int]:
    """What Lookup.draft must give, by scanning: for n from 4 down to 2, the last earlier end of the
    sequence's last n ids (no skipped id among them), then the ids after it up to a skipped one."""
    for n in range(4, 1, -1):
        suffix = ids[-n:] if len(ids) >= n else None
        if suffix is None or any(t in skip for t in suffix):
            continue
        for end in range(len(ids) - 1, n - 1, -1):
            if ids[end - n:end] == suffix:
                out = []
                for t in ids[end:end + k]:
                    if t in skip:
                        break
                    out.append(t)
                if out:
                    return out
                break
    return []


@pytest.mark.parametrize("seed", range(20))
def test_drafts_equal_a_brute_force_scan(seed):
    import random

    rng = random.Random(seed)
    vocab, skip = rng.choice([3, 5, 8]), {0} if seed % 2 else set()
    ids = [rng.randrange(vocab) for _ in range(rng.randrange(0, 40))]
    lookup = Lookup(ids, skip=skip)
    for _ in range(60):
        k = rng.randrange(1, 6)
        assert lookup.draft(k) == brute_draft(lookup.ids, skip | {-1}, k), (seed, lookup.ids)
        lookup.append(rng.randrange(vocab))


def test_image_and_video_placeholders_are_never_matched_nor_drafted():
    assert Lookup([3, 4, 10, 11, 900, 900, 12, 3, 4]).draft(4) == [10, 11, 900, 900]
    assert Lookup([3, 4, 10, 11, 900, 900, 12, 3, 4], skip=MEDIA).draft(4) == [10, 11], "stops before one"
    assert Lookup([900, 900, 900, 900], skip=MEDIA).draft(3) == []


def test_a_reference_is_looked_up_behind_the_prompt_and_never_run_into():
    lookup = Lookup([1, 2, 3, 5, 6], references=[[5, 6, 7, 8, 9]])
    assert lookup.draft(4) == [7, 8, 9], "the reference's ids, not the prompt's first ones"
    lookup = Lookup([5, 6, 2, 4, 1, 5, 6], references=[[5, 6, 7, 8, 9]])
    assert lookup.draft(3) == [2, 4, 1], "a later occurrence, in the prompt, wins"
    lookup = Lookup([9], references=[[3, 1, 2]])
    lookup.append(1)
    lookup.append(2)
    assert lookup.draft(3) == [], "the reference's end does not run on into the prompt"
    lookup = Lookup([9, 1], references=[[1, 2, 3, 7], [1, 2, 4]])
    lookup.append(2)
    assert lookup.draft(3) == [4], "the later of two references, and not into the prompt"


def test_recent_answers_keep_the_last_within_their_limit_oldest_first():
    from glmv_cli.lookup import RecentAnswers

    recent = RecentAnswers(limit=10)
    recent.add([])
    recent.add([1, 2, 3, 4])
    recent.add([5, 6, 7])
    assert recent.snapshot() == [[1, 2, 3, 4], [5, 6, 7]]
    recent.add([8, 9, 10, 11])  # 11 ids: the oldest answer goes
    assert recent.snapshot() == [[5, 6, 7], [8, 9, 10, 11]]
    recent.add(list(range(20, 40)))  # longer than the limit alone: its last ids
    assert recent.snapshot() == [list(range(30, 40))]


def test_each_proposal_is_scored_by_the_ids_that_follow_it():
    from glmv_cli.lookup import EMA, SAVED_PRIOR

    lookup = Lookup([1, 2, 3, 4, 5, 1, 2])
    assert lookup.draft(3) == [3, 4, 5] and lookup.proposing()
    lookup.append(3)
    lookup.append(4)
    assert lookup.proposing() and lookup.saved == SAVED_PRIOR  # (still being matched)
    lookup.append(9)  # two of three right
    assert not lookup.proposing() and lookup.saved == pytest.approx(SAVED_PRIOR + EMA * (2 - SAVED_PRIOR))
    before = lookup.saved
    lookup = Lookup([7, 8, 1, 7, 8])
    lookup.saved = before
    assert lookup.draft(4) == [1, 7, 8]
    for token in (1, 7, 8):
        lookup.append(token)
    assert not lookup.proposing() and lookup.saved == pytest.approx(before + EMA * (3 - before))
    # drafts pay while what they save exceeds what a step checking them costs beyond one token's
    assert lookup.paying(1.25) and not lookup.paying(1.0 + lookup.saved + 0.01)


def test_step_cost_is_the_ratio_of_measured_steps_else_the_prior():
    from glmv_cli.lookup import COST_PRIOR

    cost = StepCost(timed=True)
    cost.add(0.010, checking=False)
    assert MEASURED.fget(cost) == COST_PRIOR
    cost.add(0.012, checking=True)
    assert MEASURED.fget(cost) == pytest.approx(1.2)
    cost.add(0.020, checking=False)
    assert MEASURED.fget(cost) == pytest.approx(0.012 / 0.0125)
    untimed = StepCost(timed=False)
    untimed.add(0.010, checking=False)
    untimed.add(0.030, checking=True)
    assert MEASURED.fget(untimed) == COST_PRIOR


def test_a_cpu_s_steps_are_timed_a_mac_s_are_not():
    import time

    from glmv_cli.lookup import COST_PRIOR, StepTimer

    timer = StepTimer("cpu")
    cost = timer.cost
    for checking, seconds in ((False, 0.01), (True, 0.015)):
        timer.begin()
        time.sleep(seconds)
        timer.end(checking=checking)
    assert 1.1 < MEASURED.fget(cost) < 3.0 and cost.one >= 0.01
    mac = StepTimer("mps")  # (the device runs ahead of the host: wall time is not the step's)
    untimed = mac.cost
    for checking in (False, True):
        mac.begin()
        mac.end(checking=checking)
    assert MEASURED.fget(untimed) == COST_PRIOR and untimed.one == untimed.checking == 0.0


def test_cuda_steps_are_timed_by_events_read_at_the_next_step(monkeypatch):
    """(The events' logic, with stand-ins for torch.cuda.Event: a step's events are read when the next
    step begins, once the device is past them; a step not yet done goes untimed.)"""
    import time

    import torch

    from glmv_cli.lookup import StepTimer

    class Event:
        done = True

        def __init__(self, enable_timing=False):
            assert enable_timing
            self.at = None

        def record(self):
            self.at = time.perf_counter()

        def query(self):
            return Event.done

        def elapsed_time(self, other):
            return (other.at - self.at) * 1000  # milliseconds, as CUDA's

    monkeypatch.setattr(torch.cuda, "Event", Event)
    timer = StepTimer("cuda")
    cost = timer.cost
    timer.begin()
    time.sleep(0.01)
    timer.end(checking=False)
    assert cost.one == 0.0  # (read at the next step)
    timer.begin()
    assert cost.one >= 0.01
    time.sleep(0.02)
    timer.end(checking=True)
    Event.done = False
    timer.begin()  # the device still on it: untimed
    assert cost.checking == 0.0 and timer.pending is None
    Event.done = True
    time.sleep(0.02)
    timer.end(checking=True)
    timer.begin()
    assert 1.3 < MEASURED.fget(cost) < 4.0


def test_the_default_is_on_for_an_eager_device_and_the_environment_sets_it(monkeypatch):
    monkeypatch.delenv("GLMV_SPECULATE", raising=False)
    assert draft_tokens("cpu") > 0 and draft_tokens("mps") > 0 and draft_tokens("cuda") == 0
    monkeypatch.setenv("GLMV_SPECULATE", "0")
    assert draft_tokens("cpu") == 0
    monkeypatch.setenv("GLMV_SPECULATE", "7")
    assert draft_tokens("cuda") == 7


def run(glm, inputs, draft, **kwargs) -> tuple[list[int], Generation]:
    g = Generation(glm.model, model_kwargs(inputs), draft=draft, **kwargs)
    return list(g), g


@pytest.mark.parametrize("prompt", ["text", "image", "video"])
def test_greedy_tokens_with_drafts_are_the_tokens_without(glm, prompt_inputs, prompt):
    inputs = prompt_inputs(prompt)
    plain, g0 = run(glm, inputs, 0, max_new_tokens=64)
    drafted, g = run(glm, inputs, 4, max_new_tokens=64)
    assert drafted == plain
    assert g0.drafted == 0 and g.drafted > 0 and g.accepted > 0, "a random checkpoint repeats itself"
    assert g.finish_reason == g0.finish_reason


@pytest.mark.parametrize("sampling", [
    Sampling(temperature=0.3, top_k=5, seed=3),
    Sampling(temperature=0.7, top_p=0.9, repetition_penalty=1.05, frequency_penalty=0.05, seed=3)])
def test_seeded_sampling_draws_the_same_tokens_with_drafts(glm, prompt_inputs, sampling):
    """Each token is still drawn from its own logits with the same random numbers: a draft only
    saves the step when the draw lands on it."""
    inputs = prompt_inputs("image")
    plain, _ = run(glm, inputs, 0, max_new_tokens=64, sampling=sampling)
    drafted, g = run(glm, inputs, 3, max_new_tokens=64, sampling=sampling)
    assert drafted == plain
    if sampling.top_k:
        assert g.accepted > 0


def test_forced_ids_a_steering_mask_and_logprobs_see_the_same_sequence(glm, prompt_inputs):
    class NoRepeats:
        """Bans the id fed last: what it allows depends on each id that joined the sequence."""

        def __init__(self):
            self.fed = []

        def mask(self, device):
            allowed = torch.ones(1, glm.model.cfg.text.vocab_size, dtype=torch.bool, device=device)
            if self.fed:
                allowed[0, self.fed[-1]] = False
            return allowed

        def feed(self, token):
            self.fed.append(token)

    def forced(token, calls=[]):  # noqa: B006 (counts across one run; reset below)
        calls.append(token)
        return (40, 41, 40) if len(calls) == 5 else ()

    outs = []
    for draft in (0, 4):
        forced.__defaults__[0].clear()
        steer = NoRepeats()
        out, g = run(glm, prompt_inputs("text"), draft, max_new_tokens=40, forced=forced, steering=steer,
                     logprobs=2)
        assert steer.fed == out
        outs.append((out, g))
    (plain, g0), (drafted, g) = outs
    assert drafted == plain and plain[5:8] == [40, 41, 40]
    assert g.drafted > 0
    for a, b in zip(g0.scores, g.scores, strict=True):
        if a is None:
            assert b is None
            continue
        assert b[0] == pytest.approx(a[0], abs=1e-4)
        assert [i for i, _ in b[1]] == [i for i, _ in a[1]]


@pytest.mark.parametrize("prompt, every, ids", [("image", 5, (40, 41)), ("video", 5, (40,))])
def test_ids_forced_between_drafted_ones_start_the_drafts_over(glm, prompt_inputs, prompt, every, ids):
    """Forced ids after a token that was itself drafted: the drafts checked after it no longer
    follow the sequence (mutation: keeping them fails both cases)."""
    def every_nth():
        count = [0]

        def forced(token):
            count[0] += 1
            return ids if count[0] % every == 0 else ()

        return forced

    outs = []
    for draft in (0, 4):
        out, g = run(glm, prompt_inputs(prompt), draft, max_new_tokens=48, forced=every_nth())
        outs.append(out)
    assert outs[1] == outs[0] and g.accepted > 0


def test_drafts_that_do_not_pay_are_not_checked(glm, prompt_inputs, monkeypatch):
    from glmv_cli import lookup

    plain, _ = run(glm, prompt_inputs("image"), 0, max_new_tokens=48)
    monkeypatch.setattr(lookup.StepCost, "ratio", property(lambda self: 100.0))  # a step of 1 + k: 100 steps
    out, g = run(glm, prompt_inputs("image"), 4, max_new_tokens=48)
    assert out == plain and g.drafted == 0
    monkeypatch.setattr(lookup.StepCost, "ratio", property(lambda self: 1.0))  # as cheap as one token
    out, g = run(glm, prompt_inputs("image"), 4, max_new_tokens=48)
    assert out == plain and g.drafted > 0


def test_a_static_step_checks_drafts_in_its_own_cache(glm, prompt_inputs):
    """The fixed-shape step (--compile's, a CUDA graph's) checks a token and its drafts with
    Glm4v.decode_step over its whole cache under a mask (StaticStep.check)."""
    from glmv_cli.generate import StaticStep

    for prompt in ("image", "video"):
        plain, _ = run(glm, prompt_inputs(prompt), 0, max_new_tokens=48)
        step = StaticStep(glm.model, glm.model.decode_step)
        out, g = run(glm, prompt_inputs(prompt), 3, max_new_tokens=48, step=step)
        assert out == plain and g.accepted > 0
    assert glm.model.language_model.caches is None


def test_the_budget_s_last_tokens_and_a_one_token_budget(glm, prompt_inputs):
    for limit in (1, 2, 3, 5, 17):
        plain, g0 = run(glm, prompt_inputs("text"), 0, max_new_tokens=limit)
        drafted, g = run(glm, prompt_inputs("text"), 8, max_new_tokens=limit)
        assert drafted == plain and len(drafted) == limit and g.finish_reason == "length"


def test_a_follow_up_reusing_the_cache_is_unaffected_by_rejected_drafts(glm, prompt_inputs, follow_up):
    """A generation's rejected drafts leave keys and values past its last token in the KV cache;
    the next turn, matched against the prompt cache, must not read them."""
    first = prompt_inputs("image")
    answers = []
    for draft in (0, 4):
        glm.prompt_cache.clear()
        a, g1 = run(glm, first, draft, max_new_tokens=24, prompt_cache=glm.prompt_cache)
        second = extended(first, torch.cat([torch.tensor([a]), follow_up], dim=1))
        b, g2 = run(glm, second, draft, max_new_tokens=24, prompt_cache=glm.prompt_cache)
        assert g2.cached_tokens == first["input_ids"].shape[1] + len(a) - 1  # (the last id is never run)
        answers.append((a, b, g1.drafted - g1.accepted))
    assert answers[0][:2] == answers[1][:2]
    assert answers[1][2] > 0, "some drafts were rejected"
    glm.prompt_cache.clear()


def test_alone_in_a_batcher_it_drafts_and_beside_others_it_decodes_with_them(glm, prompt_inputs, monkeypatch):
    from glmv_cli.batching import DecodeBatcher
    from tests.model.test_batched_generation import concurrently

    prompts, limits = ["image", "text", "video"], [40, 12, 20]  # (the first decodes alone at the end)
    alone = [run(glm, prompt_inputs(p), 0, max_new_tokens=n)[0] for p, n in zip(prompts, limits, strict=True)]
    batcher = DecodeBatcher(glm.model, rows=4, wait_s=1.0)
    out, g = run(glm, prompt_inputs("image"), 4, max_new_tokens=40, batcher=batcher)
    assert out == alone[0] and g.accepted > 0 and batcher.steps < 40 - g.accepted
    batcher = DecodeBatcher(glm.model, rows=4, wait_s=1.0)
    checks = []  # (tokens in a step of one generation's own, generations decoding then)
    decode = type(glm.model).decode

    def counted(model, tokens, start, delta):
        checks.append((tokens.shape[1], batcher.decoding))
        return decode(model, tokens, start, delta)

    monkeypatch.setattr(type(glm.model), "decode", counted)

    def make(i):
        return Generation(glm.model, model_kwargs(prompt_inputs(prompts[i])), max_new_tokens=limits[i], draft=4,
                          batcher=batcher)

    assert concurrently(make, 3) == alone
    drafting = [decoding for tokens, decoding in checks if tokens > 1]
    assert drafting and max(drafting) == 1, "drafts only checked by the last one left decoding"
    assert batcher.row_steps / batcher.steps > 1.5, "drafts did not part generations decoding together"
    assert batcher.decoding == 0 and glm.model.language_model.caches is None
