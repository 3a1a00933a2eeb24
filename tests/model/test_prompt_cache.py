"""The prompt cache: a prompt that begins like the last one runs only the rest, with the logits and
tokens of a full run; the same placeholder ids over other pixels are run again."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from glmv_cli.generate import Generation, Sampling, StaticStep
from glmv_cli.prompt_cache import Media, PromptCache, prompt_media
from tests.model.conftest import extended, model_kwargs

SAMPLED = Sampling(temperature=1.5, seed=3)  # random weights: greedy repeats one token; draws show any change


def generate(glm, inputs, n, cache=None, step=None, sampling=SAMPLED):
    gen = Generation(glm.model, inputs, max_new_tokens=n, sampling=sampling, prompt_cache=cache,
                     step=StaticStep(glm.model, glm.model.decode_step) if step == "static" else None)
    return list(gen), gen


def first_placeholder(glm, inputs) -> int:
    types = glm.model.token_types(inputs["input_ids"])[0]
    return int(types.nonzero()[0])


@pytest.mark.parametrize("step", [None, "static"])
@pytest.mark.parametrize("name", ["text", "images", "video", "mixed"])
def test_a_next_turn_runs_only_its_new_tokens_and_gets_the_same_tokens(glm, prompt_inputs, follow_up, name, step):
    first = model_kwargs(prompt_inputs(name))
    second = extended(first, follow_up)
    cache = PromptCache()
    _, gen = generate(glm, first, 4, cache, step)
    assert gen.cached_tokens == 0
    got, gen = generate(glm, second, 12, cache, step)
    assert gen.cached_tokens == first["input_ids"].shape[1]
    want, fresh = generate(glm, second, 12, None, step)
    assert fresh.cached_tokens == 0
    assert got == want


@pytest.mark.parametrize("name", ["images", "mixed"])
def test_prefill_from_the_cache_gives_the_logits_of_a_full_prefill(glm, prompt_inputs, follow_up, name):
    first = model_kwargs(prompt_inputs(name))
    second = extended(first, follow_up)
    text, n = glm.model.language_model, first["input_ids"].shape[1]
    text.setup_cache(1, second["input_ids"].shape[1])
    full, full_delta = glm.model.prefill(**second)
    text.setup_cache(1, second["input_ids"].shape[1])
    glm.model.prefill(**first)
    rest, delta = glm.model.prefill(**second, start=n)
    text.drop_cache()
    assert delta == full_delta
    assert (rest - full).abs().max().item() <= 1e-5


def test_other_pixels_under_the_same_placeholders_run_again(glm, prompt_inputs):
    first = model_kwargs(prompt_inputs("images"))
    other = {**first, "pixel_values": first["pixel_values"] + 0.25}  # the same ids, other images
    cache = PromptCache()
    seen, _ = generate(glm, first, 12, cache)
    got, gen = generate(glm, other, 12, cache)
    assert gen.cached_tokens == first_placeholder(glm, first)  # the text before the first image only
    want, _ = generate(glm, other, 12)
    assert got == want != seen


def test_the_same_prompt_again_runs_its_last_token(glm, prompt_inputs):
    inputs = model_kwargs(prompt_inputs("image"))
    cache = PromptCache()
    want, _ = generate(glm, inputs, 10, cache)
    got, gen = generate(glm, inputs, 10, cache)
    assert gen.cached_tokens == inputs["input_ids"].shape[1] - 1
    assert got == want


def test_the_kept_cache_is_used_when_it_fits_and_copied_when_it_does_not(glm, prompt_inputs, follow_up):
    first = model_kwargs(prompt_inputs("image"))
    second = extended(first, follow_up)
    want, _ = generate(glm, second, 8)
    cache = PromptCache()
    generate(glm, first, 64, cache)  # room for the follow-up in its cache
    kept = cache.caches
    got, _ = generate(glm, second, 8, cache)
    assert cache.caches is kept and got == want
    cache.clear()
    generate(glm, first, 2, cache)
    small = cache.caches
    got, gen = generate(glm, second, 8, cache)
    assert gen.cached_tokens == first["input_ids"].shape[1]
    assert cache.caches is not small and got == want


def test_the_cache_holds_the_prompt_and_every_token_fed_back(glm, prompt_inputs):
    inputs = model_kwargs(prompt_inputs("image"))
    cache = PromptCache()
    out, gen = generate(glm, inputs, 6, cache)
    assert gen.finish_reason == "length"
    assert cache.ids == inputs["input_ids"][0].tolist() + out[:-1]  # the last token was never fed back


def test_a_generation_closed_early_leaves_what_it_fed(glm, prompt_inputs, follow_up):
    first = model_kwargs(prompt_inputs("image"))
    second = extended(first, follow_up)
    cache = PromptCache()
    tokens = iter(Generation(glm.model, first, max_new_tokens=10, sampling=SAMPLED, prompt_cache=cache))
    next(tokens), next(tokens)
    tokens.close()  # as Ctrl-C or a dropped client does
    assert len(cache.ids) == first["input_ids"].shape[1] + 1
    got, gen = generate(glm, second, 8, cache)
    assert gen.cached_tokens == first["input_ids"].shape[1]
    assert got == generate(glm, second, 8)[0]


def test_a_failure_keeps_nothing(glm, prompt_inputs, monkeypatch):
    inputs = model_kwargs(prompt_inputs("image"))
    cache = PromptCache()
    generate(glm, inputs, 4, cache)
    assert cache.caches is not None

    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(glm.model, "prefill", fail)
    with pytest.raises(RuntimeError, match="boom"):
        generate(glm, inputs, 4, cache)
    assert cache.caches is None and cache.ids == []


def test_a_resumed_prefill_cannot_start_inside_an_image(glm, prompt_inputs):
    inputs = model_kwargs(prompt_inputs("image"))
    at = first_placeholder(glm, inputs) + 1
    glm.model.language_model.setup_cache(1, inputs["input_ids"].shape[1])
    try:
        with pytest.raises(ValueError, match="cannot be resumed at token"):
            glm.model.prefill(**inputs, start=at)
    finally:
        glm.model.language_model.drop_cache()


def test_media_of_a_prompt_in_order_with_their_spans(glm, prompt_inputs):
    inputs = model_kwargs(prompt_inputs("mixed"))
    types = glm.model.token_types(inputs["input_ids"])
    media = prompt_media(inputs, types)
    assert [m.kind for m in media] == [1, 1, 2]
    for m in media:
        assert set(types[0, m.start:m.end].tolist()) >= {m.kind} and types[0, m.start - 1] == 0
    assert types[0, media[2].start:media[2].end].tolist().count(0) > 0  # the frames' timestamps inside
    assert len({m.digest for m in media}) == 3
    again = prompt_media({**inputs, "pixel_values_videos": inputs["pixel_values_videos"] * 1.0}, types)
    assert again == media  # the same pixels, the same digests


def fake(ids, media) -> PromptCache:
    cache = PromptCache()
    cache.hold([SimpleNamespace(holder=cache)], ids, media)
    return cache


IMAGE = Media(1, 2, 5, (1, 2, 6), b"pixels")  # 3 placeholders (id 9) at tokens 2..4


@pytest.mark.parametrize("new_ids, new_media, held", [
    ([1, 2, 9, 9, 9, 3, 4, 5], [IMAGE], 7),         # the same prompt: all but the last token
    ([1, 2, 9, 9, 9, 3, 7, 8], [IMAGE], 6),         # it differs after the image
    ([1, 2, 9, 9, 9, 3], [IMAGE], 5),               # a shorter prompt: all but its last token
    ([1, 2, 9, 9, 3, 4, 5], [Media(1, 2, 4, (1, 2, 4), b"pixels")], 2),  # a smaller image: it runs again
    ([1, 2, 9, 9, 9, 3, 4, 5], [Media(1, 2, 5, (1, 2, 6), b"other")], 2),  # the same ids over other pixels
    ([1, 3, 9, 9, 9, 3, 4, 5], [IMAGE], 1),         # it differs before the image
    ([1, 2, 3, 4], [], 2),                          # no image where the cache has one
])
def test_match(new_ids, new_media, held):
    cache = fake([1, 2, 9, 9, 9, 3, 4, 5, 6], [IMAGE])
    assert cache.match(new_ids, new_media) == held


def test_match_never_ends_inside_an_image_the_cache_holds_part_of():
    cache = fake([1, 2, 9, 9], [])  # a prefill that stopped inside the image
    assert cache.match([1, 2, 9, 9, 9, 3], [IMAGE]) == 2
    assert PromptCache().match([1, 2, 3], []) == 0  # nothing kept


def test_a_cache_another_generation_wrote_into_is_not_matched(glm, prompt_inputs, follow_up):
    """A static step (a CUDA graph) keeps one cache for every request: after a generation without
    this prompt cache used it, what the prompt cache says it holds is gone."""
    first = model_kwargs(prompt_inputs("image"))
    second = extended(first, follow_up)
    step = StaticStep(glm.model, glm.model.decode_step)
    step.end = lambda: None  # keep the cache on the model between requests, as a CUDA graph does
    step.begin = lambda n: glm.model.language_model.caches or glm.model.language_model.setup_cache(1, 256)
    cache = PromptCache()
    try:
        list(Generation(glm.model, first, max_new_tokens=4, sampling=SAMPLED, step=step, prompt_cache=cache))
        other = model_kwargs(prompt_inputs("text"))
        list(Generation(glm.model, other, max_new_tokens=4, sampling=SAMPLED, step=step))  # no prompt cache
        assert cache.match(second["input_ids"][0].tolist(), []) == 0
        gen = Generation(glm.model, second, max_new_tokens=8, sampling=SAMPLED, step=step, prompt_cache=cache)
        assert list(gen) == generate(glm, second, 8)[0] and gen.cached_tokens == 0
    finally:
        glm.model.language_model.drop_cache()


def test_an_unrelated_request_between_two_turns_costs_the_first_chat_nothing(glm, prompt_inputs, follow_up):
    """A chat interface asks for a title between two turns (or a second chat interleaves): the first
    chat's prompt is set aside in a snapshot and its next turn still runs only what it adds."""
    chat = model_kwargs(prompt_inputs("images"))
    other = model_kwargs(prompt_inputs("video"))
    cache = PromptCache(slots=4)
    generate(glm, chat, 4, cache)
    generate(glm, other, 4, cache)
    assert [s.ids for s in cache.snapshots] == [chat["input_ids"][0].tolist()]
    got, gen = generate(glm, extended(chat, follow_up), 8, cache)
    assert gen.cached_tokens == chat["input_ids"].shape[1]
    assert got == generate(glm, extended(chat, follow_up), 8)[0]
    got, gen = generate(glm, extended(other, follow_up), 8, cache)  # and the other one, back
    assert gen.cached_tokens == other["input_ids"].shape[1]
    assert got == generate(glm, extended(other, follow_up), 8)[0]
    # the first chat's snapshot gave way to one of its longer prompt; nothing is kept twice
    assert [len(s.ids) for s in cache.snapshots] == [extended(chat, follow_up)["input_ids"].shape[1]]


def test_snapshots_stay_within_their_slots_and_budget(glm, prompt_inputs):
    chat, other = model_kwargs(prompt_inputs("images")), model_kwargs(prompt_inputs("video"))
    none = PromptCache(slots=0)
    generate(glm, chat, 4, none)
    generate(glm, other, 4, none)
    assert none.snapshots == [] and none.match(chat["input_ids"][0].tolist(), []) < 8  # the template's start only
    per_layer = 2 * chat["input_ids"].shape[1] * glm.config.text.num_kv_heads * glm.config.text.head_dim * 4
    small = PromptCache(budget=per_layer * glm.config.text.num_layers - 1)  # one byte short of the snapshot
    generate(glm, chat, 4, small)
    generate(glm, other, 4, small)
    assert small.snapshots == []
    fits = PromptCache(budget=per_layer * glm.config.text.num_layers)
    generate(glm, chat, 4, fits)
    generate(glm, other, 4, fits)
    assert len(fits.snapshots) == 1 and fits.snapshots[0].nbytes == fits.budget
