"""Our GLM-4.1V against transformers' Glm4vForConditionalGeneration on the same tiny checkpoint:
same logits (float32, <= 1e-4), same vision features, same 3D positions, same greedy tokens."""

from __future__ import annotations

import pytest
import torch

import glmv_cli
from tests.model.conftest import PROMPTS, VARIANTS, make_inputs, model_kwargs
from tests.reference import building_block_logits, reference_model, reference_processor

ATOL = 1e-4


@pytest.fixture(scope="module")
def ours(tiny_folder):
    return glmv_cli.load(tiny_folder, device="cpu", dtype="float32")


@pytest.mark.parametrize("name", list(PROMPTS))
def test_logits_match_reference(ours, reference, prompt_inputs, name):
    inputs = prompt_inputs(name)
    expected = building_block_logits(reference, inputs)
    if name != "mixed":  # transformers' own forward refuses image + video prompts
        with torch.no_grad():
            assert torch.equal(reference(**inputs).logits, expected)
    got = ours.model(**model_kwargs(inputs))
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= ATOL


@pytest.mark.parametrize("name", ["image", "images", "wide"])
def test_vision_features_match_reference(ours, reference, prompt_inputs, name):
    inputs = prompt_inputs(name)
    with torch.no_grad():
        expected = reference.model.visual(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output
    got = ours.model.visual(inputs["pixel_values"], inputs["image_grid_thw"])
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= ATOL


def test_video_features_match_reference(ours, reference, prompt_inputs):
    inputs = prompt_inputs("video")
    with torch.no_grad():
        expected = torch.cat(reference.model.get_video_features(
            inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output)
    got = ours.model.visual(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    assert (got - expected).abs().max().item() <= ATOL


@pytest.mark.parametrize("name", list(PROMPTS))
def test_positions_and_rope_deltas_equal_reference(ours, reference, prompt_inputs, name):
    inputs = prompt_inputs(name)
    expected, expected_delta = reference.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], inputs.get("image_grid_thw"),
        inputs.get("video_grid_thw"), inputs["attention_mask"])
    types = ours.model.token_types(inputs["input_ids"])
    assert torch.equal(types, inputs["mm_token_type_ids"].long())
    got, delta = ours.model.positions(types, inputs.get("image_grid_thw"), inputs.get("video_grid_thw"))
    assert torch.equal(got, expected)
    assert torch.equal(delta, expected_delta)


def test_worked_example_positions(ours, prompt_inputs):
    """The 112x168 image example of positions.py's docstring, checked by hand."""
    inputs = prompt_inputs("image")
    types = ours.model.token_types(inputs["input_ids"])
    pos, delta = ours.model.positions(types, inputs["image_grid_thw"])
    first_image = int(types[0].nonzero()[0])
    t, h, w = pos[:, 0, first_image:first_image + 24]
    assert (t == first_image).all()
    assert h.tolist() == [first_image + i for i in range(4) for _ in range(6)]
    assert w.tolist() == [first_image + j for _ in range(4) for j in range(6)]
    after = pos[:, 0, first_image + 24]
    assert after.tolist() == [first_image + 6] * 3  # + max(4, 6)
    assert int(delta) == int(pos.max()) + 1 - inputs["input_ids"].shape[1]


@pytest.mark.parametrize("name", ["image", "video", "images"])
def test_32_greedy_tokens_equal_reference_generate(ours, reference, prompt_inputs, name):
    inputs = prompt_inputs(name)
    n = inputs["input_ids"].shape[1]
    with torch.no_grad():
        expected = reference.generate(**inputs, max_new_tokens=32, min_new_tokens=32, do_sample=False)[0, n:]
    got = list(ours.generate(model_kwargs(inputs), max_new_tokens=32, ignore_stop=True))
    assert len(set(got)) > 4, "degenerate random model: the comparison would prove little"
    assert got == expected.tolist()


@pytest.mark.parametrize("name", ["mixed", "text"])
def test_cached_decode_equals_full_recompute(ours, prompt_inputs, name):
    """Greedy with the KV cache == greedy recomputing the whole sequence each step."""
    inputs = model_kwargs(prompt_inputs(name))
    cached = list(ours.generate(inputs, max_new_tokens=12, ignore_stop=True))
    ids = inputs["input_ids"]
    recomputed = []
    for _ in range(12):
        logits = ours.model(**{**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)})
        nxt = logits[0, -1].argmax().view(1, 1)
        recomputed.append(int(nxt))
        ids = torch.cat([ids, nxt], dim=1)
    assert cached == recomputed


def test_cached_step_logits_equal_full_forward(ours, prompt_inputs):
    """Logits of a multi-token cached step == the same rows of a full forward."""
    inputs = model_kwargs(prompt_inputs("image"))
    model = ours.model
    extra = torch.tensor([[40, 41, 42, 43]])
    full = model(**{**inputs, "input_ids": torch.cat([inputs["input_ids"], extra], 1), "attention_mask": None})
    n = inputs["input_ids"].shape[1]
    model.language_model.setup_cache(1, n + 4)
    _, delta = model.prefill(**inputs)
    step = model.decode(extra, n, delta)
    model.language_model.drop_cache()
    assert (step - full[:, n:]).abs().max().item() <= ATOL


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "base"])
def test_other_tiny_configs_match_reference(checkpoints, variant):
    folder = checkpoints(variant)
    reference, processor = reference_model(folder), reference_processor(folder)
    ours = glmv_cli.load(folder, device="cpu", dtype="float32")
    for name in ("mixed", "images"):
        inputs = make_inputs(processor, name)
        expected = building_block_logits(reference, inputs)
        assert (ours.model(**model_kwargs(inputs)) - expected).abs().max().item() <= ATOL
    inputs = make_inputs(processor, "video")
    n = inputs["input_ids"].shape[1]
    with torch.no_grad():
        expected = reference.generate(**inputs, max_new_tokens=16, min_new_tokens=16, do_sample=False)[0, n:]
    assert list(ours.generate(model_kwargs(inputs), max_new_tokens=16, ignore_stop=True)) == expected.tolist()


def test_left_padded_batch_matches_single_prompts(ours, reference, processor):
    """A batch of two prompts of different lengths, left-padded as the processor does."""
    from tests.model.conftest import random_image

    texts = ["Describe this.", "What is in this picture, in detail, please?"]
    prompts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}],
        tokenize=False, add_generation_prompt=True) for t in texts]
    images = [random_image(56, 84, 1), random_image(84, 56, 2)]
    batch = dict(processor(text=prompts, images=images, return_tensors="pt", padding=True))
    assert not batch["attention_mask"].all()
    got = ours.model(**model_kwargs(batch))
    expected = building_block_logits(reference, batch)
    real = batch["attention_mask"].bool()
    assert (got[real] - expected[real]).abs().max().item() <= ATOL


def test_glm46v_checkpoint_with_other_special_ids_matches_its_reference(tmp_path):
    """GLM-4.6V-Flash's layout: model_type glm46v, special tokens at other ids (here: a larger BPE
    vocabulary moves every special token). transformers runs it as Glm46VForConditionalGeneration."""
    import json

    from transformers import Glm46VForConditionalGeneration

    import tests.reference as ref_module
    from glmv_cli.random_checkpoint import build_tokenizer

    original = ref_module.build_tokenizer
    ref_module.build_tokenizer = lambda: build_tokenizer(vocab_size=340)
    try:
        folder = ref_module.write_checkpoint(tmp_path / "glm46v", seed=5)
    finally:
        ref_module.build_tokenizer = original
    config = json.loads((folder / "config.json").read_text())
    base, write_ids = build_tokenizer().token_to_id("<|image|>"), config["image_token_id"]
    assert write_ids != base  # the ids really moved
    config["model_type"] = "glm46v"
    config["vision_config"]["model_type"] = "glm4v_vision"  # glm46v resolves sub-configs by model_type
    config["architectures"] = ["Glm46VForConditionalGeneration"]
    (folder / "config.json").write_text(json.dumps(config))
    reference = Glm46VForConditionalGeneration.from_pretrained(str(folder), dtype=torch.float32).eval()
    inputs = make_inputs(reference_processor(folder), "mixed")
    ours = glmv_cli.load(folder, device="cpu", dtype="float32")
    assert ours.config.model_type == "glm46v" and ours.config.image_token_id == write_ids
    expected = building_block_logits(reference, inputs)
    assert (ours.model(**model_kwargs(inputs)) - expected).abs().max().item() <= ATOL
