"""A batched decode step (Glm4v.decode_rows): several sequences, each at its own position in its own
KV cache, one token each, give the logits each gets decoded alone."""

from __future__ import annotations

import pytest
import torch

from tests.model.conftest import model_kwargs


def prefilled(glm, inputs: dict, length: int):
    """(its own per-layer caches, last logits, rope delta, prompt length) after the prompt."""
    text = glm.model.language_model
    text.setup_cache(1, length)
    logits, delta = glm.model.prefill(**inputs)
    caches, text.caches = text.caches, None
    return caches, logits, delta, int(inputs["input_ids"].shape[1])


def alone(glm, caches, token: int, pos: int, delta: int) -> torch.Tensor:
    text = glm.model.language_model
    text.caches = caches
    try:
        return glm.model.decode(torch.tensor([[token]]), pos, delta)[:, -1]
    finally:
        text.caches = None


@pytest.mark.parametrize("variant", ["base", "mha_deep", "mqa"])
def test_rows_at_their_own_positions_equal_each_row_alone(variant, checkpoints, prompt_inputs, tiny_folder):
    import glmv_cli

    torch.set_num_threads(1)
    folder = checkpoints(variant)
    glm = glmv_cli.load(folder, device="cpu", dtype="float32")
    if folder != tiny_folder:  # the prompts were made by the base checkpoint's processor: same tokenizer
        assert glm.config.image_token_id == glmv_cli.load(tiny_folder, device="cpu").config.image_token_id
    names = ("text", "image", "video")
    runs = [prefilled(glm, model_kwargs(prompt_inputs(n)), 600) for n in names]
    twins = [prefilled(glm, model_kwargs(prompt_inputs(n)), 600) for n in names]
    tokens = [int(r[1].argmax()) for r in runs]
    positions = [r[3] for r in runs]
    for _ in range(6):  # three sequences of different lengths (with rope deltas of their own) in step
        batched = glm.model.decode_rows(torch.tensor([[t] for t in tokens]), positions, [r[2] for r in runs],
                                        [r[0] for r in runs])
        assert batched.shape == (3, glm.config.text.vocab_size)
        for b, (caches, _, delta, _) in enumerate(twins):
            single = alone(glm, caches, tokens[b], positions[b], delta)
            torch.testing.assert_close(batched[b:b + 1], single, rtol=1e-5, atol=1e-5)
        tokens = [int(row.argmax()) for row in batched]
        positions = [p + 1 for p in positions]
    for (caches, *_), (twin, *_) in zip(runs, twins, strict=True):  # each row wrote its own cache only
        for c, t in zip(caches, twin, strict=True):
            torch.testing.assert_close(c.k, t.k, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(c.v, t.v, rtol=1e-5, atol=1e-5)


def test_one_row_is_the_plain_decode(glm, prompt_inputs):
    caches, logits, delta, n = prefilled(glm, model_kwargs(prompt_inputs("image")), 300)
    twin = [type(c)(1, c.k.shape[1], c.k.shape[2], c.k.shape[3], c.k.dtype, c.k.device) for c in caches]
    for c, t in zip(caches, twin, strict=True):
        t.k.copy_(c.k)
        t.v.copy_(c.v)
    token = int(logits.argmax())
    got = glm.model.decode_rows(torch.tensor([[token]]), [n], [delta], [caches])
    torch.testing.assert_close(got, alone(glm, twin, token, n, delta), rtol=0, atol=0)


def test_int8_rows_equal_each_row_alone(tiny_folder, prompt_inputs):
    """Weight-only int8 (glmv serve --quantize int8 --parallel N): its kernel takes the rows together."""
    import glmv_cli

    glm = glmv_cli.load(tiny_folder, device="cpu", dtype="bfloat16", quantize="int8")
    runs = [prefilled(glm, model_kwargs(prompt_inputs(n)), 300) for n in ("text", "image")]
    twins = [prefilled(glm, model_kwargs(prompt_inputs(n)), 300) for n in ("text", "image")]
    tokens = torch.tensor([[int(r[1].argmax())] for r in runs])
    batched = glm.model.decode_rows(tokens, [r[3] for r in runs], [r[2] for r in runs], [r[0] for r in runs])
    for b, (caches, _, delta, n) in enumerate(twins):
        torch.testing.assert_close(batched[b:b + 1], alone(glm, caches, int(tokens[b]), n, delta), rtol=1e-2,
                                   atol=1e-2)


def test_the_static_step_of_rows_equals_the_rows_step(checkpoints, prompt_inputs):
    """decode_rows_static (fixed shapes, positions as tensors: what a CUDA graph captures) gives the
    logits of decode_rows and writes the same keys and values."""
    import glmv_cli

    torch.set_num_threads(1)
    glm = glmv_cli.load(checkpoints("base"), device="cpu", dtype="float32")
    names = ("text", "image", "video")
    runs = [prefilled(glm, model_kwargs(prompt_inputs(n)), 200 + 100 * i) for i, n in enumerate(names)]
    twins = [prefilled(glm, model_kwargs(prompt_inputs(n)), 200 + 100 * i) for i, n in enumerate(names)]
    tokens = torch.tensor([[int(r[1].argmax())] for r in runs])
    positions, deltas = [r[3] for r in runs], [r[2] for r in runs]
    for _ in range(4):
        static = glm.model.decode_rows_static(tokens, torch.tensor(positions), torch.tensor(deltas),
                                              [r[0] for r in runs])
        plain = glm.model.decode_rows(tokens, positions, deltas, [t[0] for t in twins])
        torch.testing.assert_close(static, plain, rtol=1e-5, atol=1e-5)
        tokens, positions = static.argmax(-1, keepdim=True), [p + 1 for p in positions]
    for (caches, *_), (twin, *_) in zip(runs, twins, strict=True):
        for c, t in zip(caches, twin, strict=True):
            torch.testing.assert_close(c.k, t.k, rtol=1e-5, atol=1e-5)
