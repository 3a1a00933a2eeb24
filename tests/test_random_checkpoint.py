"""The random-checkpoint writer produces files transformers and safetensors read as we do."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

import glmv_cli
from glmv_cli.random_checkpoint import write_random_checkpoint
from tests.model.conftest import make_inputs, model_kwargs
from tests.reference import building_block_logits, reference_model, reference_processor


def test_sharded_random_checkpoint_loads_in_transformers_with_equal_logits(tmp_path):
    folder = write_random_checkpoint(tmp_path / "ckpt", "tiny", dtype=torch.float32, shard_bytes=400_000)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    state = {}
    for name in shards:  # the official safetensors reader agrees with our writer
        state.update(load_file(str(folder / name)))
    assert set(state) == set(index["weight_map"])
    ours = glmv_cli.load(folder, device="cpu", dtype="float32")
    assert all(torch.equal(ours.model.state_dict()[k], v) for k, v in state.items())
    inputs = make_inputs(reference_processor(folder), "mixed")
    expected = building_block_logits(reference_model(folder), inputs)
    assert (ours.model(**model_kwargs(inputs)) - expected).abs().max().item() <= 1e-4
