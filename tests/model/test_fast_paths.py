"""The speed paths change nothing they should not: the static decode step (eager and compiled)
gives the eager decoder's tokens, and int8 weights load, generate, and stay close to float32."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import glmv_cli
from glmv_cli.generate import Generation, compiled_step
from glmv_cli.model.quant import Int8Linear, quantize_int8
from tests.model.conftest import agreement, model_kwargs


@pytest.fixture(scope="module")
def glm_int8(tiny_folder):
    return glmv_cli.load(tiny_folder, device="cpu", dtype="float32", quantize="int8")


def tokens(glm, inputs, step=None, n=20) -> list[int]:
    return list(Generation(glm.model, inputs, max_new_tokens=n, step=step))


@pytest.mark.parametrize("prompt", ["image", "mixed"])
def test_static_decode_step_gives_the_eager_tokens(glm, prompt_inputs, prompt):
    inputs = model_kwargs(prompt_inputs(prompt))
    assert tokens(glm, inputs, step=glm.model.decode_step) == tokens(glm, inputs)


def test_compiled_decode_step_gives_the_eager_tokens(glm, prompt_inputs):
    inputs = model_kwargs(prompt_inputs("image"))
    torch._dynamo.reset()
    step = compiled_step(glm.model)
    assert tokens(glm, inputs, step=step, n=12) == tokens(glm, inputs, n=12)


def test_int8_rows_round_trip_within_half_a_step():
    w = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    w[3] *= 100  # scales are per row: a large row does not spoil the others
    q, scales = quantize_int8(w)
    assert q.dtype == torch.int8 and scales.shape == (64,)
    err = (q.float() * scales[:, None] - w).abs()
    assert (err <= scales[:, None] / 2 + 1e-6).all()


def test_int8_linear_is_the_dequantized_product():
    lin = torch.nn.Linear(96, 40, bias=True)
    q8 = Int8Linear.like(lin)
    q8.set_weight(lin.weight.detach())
    q8.bias.data.copy_(lin.bias.detach())
    x = torch.randn(3, 5, 96)
    q, scales = quantize_int8(lin.weight.detach())
    expected = F.linear(x, q.float() * scales[:, None], lin.bias)
    torch.testing.assert_close(q8(x), expected, rtol=2e-2, atol=2e-2)  # bfloat16 activations on CPU


@pytest.mark.parametrize("native", [True, False])
def test_int8_linear_on_a_prompt_is_the_dequantized_product(native, monkeypatch):
    """A prompt's many rows: dequantized into a bfloat16 GEMM where the CPU multiplies bfloat16
    natively, torch's int8 kernel elsewhere; the same product either way."""
    import glmv_cli.model.quant as quant

    monkeypatch.setattr(quant, "native_bfloat16", lambda: native)
    lin = torch.nn.Linear(256, 48, bias=True)
    q8 = Int8Linear.like(lin)
    q8.set_weight(lin.weight.detach())
    q8.bias.data.copy_(lin.bias.detach())
    x = torch.randn(1, quant.CPU_GEMM_ROWS + 5, 256)
    q, scales = quantize_int8(lin.weight.detach())
    expected = F.linear(x, q.float() * scales[:, None], lin.bias)
    torch.testing.assert_close(q8(x), expected, rtol=2e-2, atol=5e-2)


def test_int8_loads_the_text_decoder_and_embedding_in_int8(glm_int8, tiny_folder):
    from safetensors.torch import load_file

    model = glm_int8.model
    assert model.lm_head.weight.dtype == torch.int8
    assert model.language_model.layers[0].self_attn.q_proj.weight.dtype == torch.int8
    assert model.language_model.layers[0].mlp.down_proj.weight.dtype == torch.int8
    assert model.visual.blocks[0].attn.qkv.weight.dtype == torch.float32  # on a CPU the vision tower is not
    assert model.language_model.norm.weight.dtype == torch.float32
    emb = model.language_model.embed_tokens
    assert emb.weight.dtype == torch.int8 and emb.scales.dtype == torch.float32
    ids = torch.tensor([[0, 5, 17, 42]])
    rows = load_file(str(tiny_folder / "model.safetensors"))["model.language_model.embed_tokens.weight"][ids[0]]
    got = emb(ids)[0]
    assert got.dtype == torch.float32
    assert ((got - rows).abs() <= emb.scales[ids[0], None] / 2 + 1e-7).all()  # within half a step per row


def test_int8_covers_the_vision_tower_only_off_the_cpu(tiny_folder):
    from glmv_cli.model.config import Glm4vConfig
    from glmv_cli.model.glm4v import Glm4v
    from glmv_cli.model.quant import quantizable

    with torch.device("meta"):
        model = Glm4v(Glm4vConfig.from_dict(json.loads((tiny_folder / "config.json").read_text())))
    text, both = set(quantizable(model)), set(quantizable(model, vision=True))
    assert "model.language_model.embed_tokens" in text and "lm_head" in text
    assert not any(n.startswith("model.visual.") for n in text)
    vision = both - text
    assert "model.visual.blocks.0.attn.qkv" in vision and "model.visual.merger.gate_proj" in vision
    assert all(isinstance(model.get_submodule(n), torch.nn.Linear) for n in vision)  # no convolutions


def test_int8_generation_agrees_with_float32(glm, glm_int8, prompt_inputs):
    """On peaked logits (the test checkpoints scale the LM head up), int8 keeps the greedy choice."""
    agree, least = agreement(glm, glm_int8, prompt_inputs)
    assert agree >= 0.95 and least > 0.99, (agree, least)
    inputs = model_kwargs(prompt_inputs("image"))
    assert len(tokens(glm_int8, inputs, n=8)) > 0  # end to end through the cache


def test_unknown_quantization_is_a_clear_error(tiny_folder):
    from glmv_cli.errors import ModelError

    with pytest.raises(ModelError, match="unknown quantization 'int3'; use int8 or int4"):
        glmv_cli.load(tiny_folder, device="cpu", dtype="float32", quantize="int3")


def test_int8_loading_in_row_blocks_equals_whole_matrix_quantization(tiny_folder, monkeypatch):
    from safetensors.torch import load_file

    import glmv_cli.loading as loading

    monkeypatch.setattr(loading, "QUANTIZE_BLOCK_BYTES", 1000)  # a few rows per block
    model = glmv_cli.load(tiny_folder, device="cpu", dtype="float32", quantize="int8").model
    state = load_file(str(tiny_folder / "model.safetensors"))
    gate_up = model.language_model.layers[1].mlp.gate_up_proj
    for name, layer in (("lm_head", model.lm_head), ("model.language_model.layers.1.mlp.gate_up_proj", gate_up)):
        q, scales = quantize_int8(state[name + ".weight"])
        assert torch.equal(layer.weight, q)
        torch.testing.assert_close(layer.scales.float(), scales, rtol=1e-2, atol=0)  # bfloat16 on CPU
