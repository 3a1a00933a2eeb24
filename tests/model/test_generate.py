"""Generation: sampling filters equal transformers' logits processors, seeds reproduce, stop ids
end the stream, defaults come from generation_config.json."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import glmv_cli
from glmv_cli.generate import Sampling, apply_repetition_penalty, filter_top_k_top_p
from tests.model.conftest import extended, model_kwargs


def random_logits(seed=0, vocab=300):
    return torch.randn(1, vocab, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("penalty", [1.1, 1.5, 0.8])
def test_repetition_penalty_equals_transformers(penalty):
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits, ids = random_logits(), torch.tensor([[3, 7, 7, 42, 299]])
    seen = torch.zeros_like(logits, dtype=torch.bool)
    seen[0, ids[0]] = True
    expected = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
    assert torch.equal(apply_repetition_penalty(logits, seen, penalty), expected)


@pytest.mark.parametrize("top_k, top_p", [(5, 1.0), (0, 0.5), (20, 0.9), (1, 0.3)])
def test_top_k_top_p_equal_transformers(top_k, top_p):
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    logits = random_logits(seed=top_k)
    expected = logits.clone()
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1:
        expected = TopPLogitsWarper(top_p)(None, expected)
    got = filter_top_k_top_p(logits, top_k, top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    kept = ~torch.isinf(got)
    assert torch.equal(got[kept], logits[kept])


def test_same_seed_same_tokens_other_seed_other_tokens(glm, prompt_inputs):
    inputs = model_kwargs(prompt_inputs("image"))

    def run(seed):
        return list(glm.generate(inputs, max_new_tokens=24, ignore_stop=True, temperature=1.5, top_p=0.95,
                                 seed=seed))

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_top_k_one_is_greedy(glm, prompt_inputs):
    inputs = model_kwargs(prompt_inputs("video"))
    greedy = list(glm.generate(inputs, max_new_tokens=16, ignore_stop=True))
    sampled = list(glm.generate(inputs, max_new_tokens=16, ignore_stop=True, temperature=0.7, top_k=1, seed=3))
    assert sampled == greedy


def test_repetition_penalty_changes_greedy_output(glm, prompt_inputs):
    inputs = model_kwargs(prompt_inputs("text"))
    plain = list(glm.generate(inputs, max_new_tokens=32, ignore_stop=True))
    penalised = list(glm.generate(inputs, max_new_tokens=32, ignore_stop=True, repetition_penalty=5.0))
    assert plain != penalised
    prompt = set(inputs["input_ids"][0].tolist())
    assert sum(t in prompt for t in penalised) <= sum(t in prompt for t in plain)


def test_stops_at_a_checkpoint_end_id_without_yielding_it(glm, prompt_inputs, tiny_folder, tmp_path):
    inputs = model_kwargs(prompt_inputs("image"))
    free = list(glm.generate(inputs, max_new_tokens=20, ignore_stop=True))
    k = next(i for i in range(2, len(free)) if free[i] not in free[:i])  # first new token after 2
    stop = free[k]
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_folder, folder)
    gen_cfg = json.loads((folder / "generation_config.json").read_text())
    gen_cfg["eos_token_id"] = [stop]
    (folder / "generation_config.json").write_text(json.dumps(gen_cfg))
    stopping = glmv_cli.load(folder, device="cpu", dtype="float32")
    assert stop in stopping.stop_ids
    generation = stopping.generate(inputs, max_new_tokens=20)
    assert list(generation) == free[:k]
    assert generation.finish_reason == "stop"
    limited = stopping.generate(inputs, max_new_tokens=k - 1)
    assert list(limited) == free[:k - 1] and limited.finish_reason == "length"


def test_generation_config_defaults_and_overrides(glm):
    assert glm.sampling() == Sampling(temperature=0.0)
    glm.defaults = {"do_sample": True, "temperature": 0.8, "top_p": 0.6, "top_k": 2, "repetition_penalty": 1.1}
    try:
        assert glm.sampling() == Sampling(temperature=0.8, top_p=0.6, top_k=2, repetition_penalty=1.1)
        assert glm.sampling(temperature=0, top_k=None).greedy
    finally:
        glm.defaults = {}


def test_forced_tokens_are_fed_in_and_decoding_continues_from_them(glm, prompt_inputs):
    """The `forced` hook (think budget): after the 3rd token, two ids are inserted as if sampled;
    what follows equals greedy full recomputation over the sequence that includes them."""
    from glmv_cli.generate import Generation

    inputs = model_kwargs(prompt_inputs("image"))
    calls = []

    def forced(token):
        calls.append(token)
        return (40, 41) if len(calls) == 3 else ()

    generation = Generation(glm.model, inputs, max_new_tokens=10, forced=forced)
    out = list(generation)
    assert len(out) == 10 and out[3:5] == [40, 41] and generation.finish_reason == "length"
    assert generation.prefill_seconds > 0 and generation.decode_seconds > 0
    ids = torch.cat([inputs["input_ids"], torch.tensor([out[:5]])], dim=1)
    for expected in out[5:]:
        logits = glm.model(**{**inputs, "input_ids": ids, "attention_mask": None})
        assert int(logits[0, -1].argmax()) == expected
        ids = torch.cat([ids, torch.tensor([[expected]])], dim=1)


def test_a_prompt_prefilled_in_chunks_gives_the_same_logits_and_tokens(glm, prompt_inputs, monkeypatch):
    """Prefill in chunks of 7 tokens (a long prompt's path, shrunk) against one pass: the same last
    logits (float32, to rounding), the same KV cache, the same greedy continuation; the video
    prompt's chunks cut through its frames."""
    import glmv_cli.model.glm4v as glm4v

    inputs = model_kwargs(prompt_inputs("video"))
    model, n = glm.model, inputs["input_ids"].shape[1]
    assert n > 3 * 7

    def prefill() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.language_model.setup_cache(1, n)
        logits, _ = model.prefill(**inputs)
        cache = [c.k.clone() for c in model.language_model.caches]
        model.language_model.drop_cache()
        return logits, cache

    whole, whole_cache = prefill()
    tokens = list(glm.generate(inputs, max_new_tokens=6, ignore_stop=True))
    monkeypatch.setattr(glm4v, "PREFILL_CHUNK", 7)
    chunked, chunked_cache = prefill()
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    for a, b in zip(chunked_cache, whole_cache, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert list(glm.generate(inputs, max_new_tokens=6, ignore_stop=True)) == tokens


def test_logprobs_are_the_references_log_softmax_along_the_sampled_sequence(glm, reference, prompt_inputs):
    """Generation(logprobs=N): each drawn token's log-probability and the N likeliest ids equal
    transformers' log-softmax at that position of the sequence (teacher-forced), whatever the
    temperature and top-p it was drawn with; a forced id has none."""
    from glmv_cli.generate import Generation

    torch.set_num_threads(1)
    inputs = model_kwargs(prompt_inputs("image"))
    forced = {5: (40, 41)}
    calls = []

    def force(token):
        calls.append(token)
        return forced.get(len(calls), ())

    generation = Generation(glm.model, inputs, max_new_tokens=12, logprobs=3, forced=force,
                            sampling=glm.sampling(temperature=1.3, top_p=0.9, seed=7))
    out = list(generation)
    assert len(out) == len(generation.scores) == 12
    full = extended(prompt_inputs("image"), torch.tensor([out]))
    if "mm_token_type_ids" in full:  # (the new tokens are text)
        text = torch.zeros(1, len(out), dtype=torch.long)
        full["mm_token_type_ids"] = torch.cat([full["mm_token_type_ids"], text], dim=1)
    with torch.no_grad():
        ref = reference(**full).logits[0].float().log_softmax(-1)
    start = inputs["input_ids"].shape[1] - 1  # the logits that predict the first new token
    for k, (token, scored) in enumerate(zip(out, generation.scores, strict=True)):
        if k in (5, 6):  # the forced ids
            assert scored is None and token == forced[5][k - 5]
            continue
        row = ref[start + k]
        chosen, top = scored
        assert abs(chosen - float(row[token])) < 1e-4
        assert [t for t, _ in top] == row.topk(3).indices.tolist()
        assert max(abs(lp - float(row[t])) for t, lp in top) < 1e-4


def test_presence_and_frequency_penalties_follow_openais_formula_step_by_step(glm, prompt_inputs):
    """Greedy decoding with OpenAI's penalties equals a full recomputation at each step of
    logits[j] - frequency * count[j] - presence * (count[j] > 0), count over the generated ids only."""
    from glmv_cli.generate import Generation

    torch.set_num_threads(1)
    inputs = model_kwargs(prompt_inputs("text"))
    plain = list(Generation(glm.model, inputs, max_new_tokens=24))
    out = list(Generation(glm.model, inputs, max_new_tokens=24,
                          sampling=glm.sampling(temperature=0, presence_penalty=0.7, frequency_penalty=1.3)))
    assert out != plain  # (the tiny model repeats itself without them)
    ids, counts = inputs["input_ids"], torch.zeros(glm.model.cfg.text.vocab_size)
    for token in out:
        with torch.no_grad():
            logits = glm.model(**{**inputs, "input_ids": ids, "attention_mask": None})[0, -1].float()
        assert int((logits - 1.3 * counts - 0.7 * (counts > 0).float()).argmax()) == token
        counts[token] += 1
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    assert max(out.count(t) for t in set(out)) < max(plain.count(t) for t in set(plain))
