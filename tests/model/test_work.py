"""A prefill's progress: the estimated work of a prompt (model/work.py) and what Glm4v.prefill
reports of it as it goes (a status line's meter, app/meter.py)."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from glmv_cli.model import work
from glmv_cli.model.config import Glm4vConfig, TextConfig, VisionConfig
from glmv_cli.model.glm4v import grid_list
from tests.model.conftest import model_kwargs


def test_work_adds_up_over_groups_and_chunks_so_a_split_prompt_costs_what_a_whole_one_does():
    v, t = VisionConfig(), TextConfig()
    grids = [(1, 32, 48), (3, 20, 20), (1, 100, 4)]
    assert work.vision_block_work(v, grids) == pytest.approx(sum(work.vision_block_work(v, [g]) for g in grids))
    assert work.merger_work(v, grids) == pytest.approx(sum(work.merger_work(v, [g]) for g in grids))
    whole = work.text_layer_work(t, 1000, 0)
    assert sum(work.text_layer_work(t, 250, at) for at in range(0, 1000, 250)) == pytest.approx(whole)
    # attention grows with the square of an image's patches, the products with their number
    one, four = work.vision_block_work(v, [(1, 20, 20)]), work.vision_block_work(v, [(4, 20, 20)])
    big = work.vision_block_work(v, [(1, 40, 40)])
    assert four == pytest.approx(4 * one) and big > 4 * one
    assert work.prefill_work(_glm41v_9b(), [], 0, 0, 2048) == 0


def _glm41v_9b() -> Glm4vConfig:
    """GLM-4.1V-9B's sizes (the configs' defaults), with made-up token ids."""
    return Glm4vConfig(TextConfig(), VisionConfig(), *range(6))


def test_glm_41v_9b_reads_a_12_megapixel_photo_in_about_200_tflop_half_of_it_in_the_tower(monkeypatch):
    """What work.py's docstring says of GLM-4.1V-9B (the real sizes are the configs' defaults),
    worked by hand: the tower's products 2 x 22,016 x (4 x 1536^2 + 3 x 1536 x 4096) x 24 = 29.9 T,
    its attention 4 x 1536 x 22,016^2 x 24 = 71.5 T, the merger 2 x 5,504 x (1536 x 4 x 4096 +
    4096^2 + 3 x 4096 x 13,696) = 2.3 T; the decoder's products 2 x 5,521 x (4096 x (2 x 4096 +
    2 x 256) + 3 x 4096 x 13,696) x 40 = 90.1 T, its attention 4 x 4096 x 5,521^2 / 2 x 40 = 10.0 T."""
    monkeypatch.setattr(work, "ATTENTION", 1.0)  # plain operations
    cfg, grids = _glm41v_9b(), [(1, 128, 172)]  # 22,016 patches: 5,504 tokens
    vision = work.vision_work(cfg.vision, grids)
    total = work.prefill_work(cfg, grids, 5504 + 17, 0, 2048)
    assert vision == pytest.approx(104e12, rel=0.02) and total - vision == pytest.approx(100e12, rel=0.02)


@pytest.mark.parametrize("name", ["text", "images", "video", "mixed"])
def test_prefill_reports_its_work_after_each_block_and_layer_up_to_the_whole(glm, prompt_inputs, monkeypatch, name):
    """progress(done, total) after every vision block and merger (per group) and every decoder
    layer of every chunk; done only grows, each step by its estimated work, and ends at total,
    the prefill's work as work.py counts it; the logits are those of a prefill without it."""
    import glmv_cli.model.glm4v as glm4v

    inputs, model = model_kwargs(prompt_inputs(name)), glm.model
    n = inputs["input_ids"].shape[1]
    monkeypatch.setattr(glm4v, "PREFILL_CHUNK", 9)  # several chunks (their attention costs differ)

    def prefill(**kw):
        model.language_model.setup_cache(1, n)
        try:
            return model.prefill(**inputs, **kw)[0]
        finally:
            model.language_model.drop_cache()

    calls = []
    logits = prefill(progress=lambda done, total: calls.append((done, total)))
    torch.testing.assert_close(logits, prefill(), rtol=0, atol=0)
    grids = grid_list(inputs.get("image_grid_thw")) + grid_list(inputs.get("video_grid_thw"))
    total = work.prefill_work(model.cfg, grids, n, 0, 9)
    media = sum(1 for g in (inputs.get("image_grid_thw"), inputs.get("video_grid_thw")) if g is not None)
    chunks, layers = -(-n // 9), model.cfg.text.num_layers
    assert len(calls) == media * (model.cfg.vision.depth + 1) + chunks * layers
    assert {t for _, t in calls} == {total} and calls[-1][0] == total
    steps = [b - a for (a, _), (b, _) in pairwise([(0.0, 0), *calls])]
    assert min(steps) > 0
    # the last chunk's layers: each its work.text_layer_work, the same for every layer
    last = work.text_layer_work(model.cfg.text, n - 9 * (chunks - 1), 9 * (chunks - 1))
    assert steps[-layers:] == pytest.approx([last] * layers)


def test_a_prefill_after_a_cached_start_counts_only_what_it_runs(glm, prompt_inputs):
    """With the prompt's first tokens already in the KV cache (prompt_cache.py), the whole is the
    rest's work: its text and the media in it (here the second and third images only)."""
    inputs, model = model_kwargs(prompt_inputs("images")), glm.model
    ids = inputs["input_ids"][0].tolist()
    n, image = len(ids), model.cfg.image_token_id
    first_end = next(i for i in range(1, n) if ids[i - 1] == image and ids[i] != image)  # after image 1
    model.language_model.setup_cache(1, n)
    try:
        model.prefill(**inputs)
        calls = []
        model.prefill(**inputs, start=first_end, progress=lambda done, total: calls.append((done, total)))
    finally:
        model.language_model.drop_cache()
    rest = grid_list(inputs["image_grid_thw"])[1:]
    assert calls[-1] == (work.prefill_work(model.cfg, rest, n - first_end, first_end, 2048),) * 2
    assert len(calls) == model.cfg.vision.depth + 1 + model.cfg.text.num_layers  # (one group of patches)
