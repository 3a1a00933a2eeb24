"""Loading: single file and shards, dtypes, the local Hugging Face cache, and every broken
checkpoint giving one clear error that names the file or the keys."""

from __future__ import annotations

import json
import shutil
from itertools import pairwise

import pytest
import torch
from safetensors.torch import load_file, save_file

import glmv_cli
from glmv_cli.errors import ModelError
from glmv_cli.loading import resolve_checkpoint
from tests.model.conftest import model_kwargs
from tests.reference import save_weights


@pytest.fixture()
def broken(tiny_folder, tmp_path):
    """A fresh copy of the tiny checkpoint to damage."""
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_folder, folder)
    return folder


def load(folder, **kw):
    return glmv_cli.load(folder, device="cpu", dtype=kw.pop("dtype", "float32"), **kw)


def test_sharded_and_single_file_give_identical_logits(tiny_folder, broken, prompt_inputs):
    state = load_file(str(tiny_folder / "model.safetensors"))
    (broken / "model.safetensors").unlink()
    save_weights(broken, state, shards=3)
    assert len(list(broken.glob("model-0000?-of-00003.safetensors"))) == 3
    inputs = model_kwargs(prompt_inputs("mixed"))
    single = load(tiny_folder).model(**inputs)
    sharded = load(broken).model(**inputs)
    assert torch.equal(single, sharded)


def test_weights_land_exactly(tiny_folder):
    state = load_file(str(tiny_folder / "model.safetensors"))
    model = load(tiny_folder).model
    ours = model.state_dict()
    assert set(ours) == set(state)
    assert all(torch.equal(ours[k], state[k]) for k in state)
    # (storage made by torch.empty of each shape, loading.empty_on: the layout to_empty would give)
    assert all(t.is_contiguous() for t in [*model.parameters(), *model.buffers()])


@pytest.mark.parametrize("quantize", [None, "int8", "int4"])
def test_loading_tells_its_progress_in_bytes_up_to_every_byte_of_the_files(tiny_folder, broken, quantize):
    """progress(read, total): total the tensors' bytes in all the files, read growing to it (in
    int8 and int4, the weights quantized as read count as read); from a sharded checkpoint too."""
    from glmv_cli.safetensors_io import read_header

    state = load_file(str(tiny_folder / "model.safetensors"))
    (broken / "model.safetensors").unlink()
    save_weights(broken, state, shards=2)
    total = sum(e.nbytes for f in broken.glob("*.safetensors") for e in read_header(f).values())
    calls = []
    glm = load(broken, quantize=quantize, progress=lambda done, of: calls.append((done, of)))
    assert {of for _, of in calls} == {total} and calls[-1][0] == total
    assert all(a < b for (a, _), (b, _) in pairwise(calls))
    assert len(calls) >= 2 + (quantize is not None) * len(glm.model.language_model.layers)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_load_converts_on_the_way(tiny_folder, prompt_inputs, dtype):
    glm = load(tiny_folder, dtype=dtype)
    params = list(glm.model.parameters())
    assert all(p.dtype == dtype for p in params)
    assert glm.model.language_model.inv_freq.dtype == torch.float32  # rope frequencies stay fp32
    full = load(tiny_folder).model(**model_kwargs(prompt_inputs("image")))
    half = glm.model(**model_kwargs(prompt_inputs("image")))
    assert torch.isfinite(half).all()
    assert torch.nn.functional.cosine_similarity(full.flatten(), half.flatten(), dim=0) > 0.99


def test_bfloat16_checkpoint_loads_as_float32(tiny_folder, broken, prompt_inputs):
    state = load_file(str(tiny_folder / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, str(broken / "model.safetensors"))
    glm = load(broken)
    expected = {k: v.to(torch.bfloat16).float() for k, v in state.items()}
    got = glm.model.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in state)


def test_repo_id_resolves_from_the_local_hf_cache(tiny_folder, tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--zai-org--GLM-4.1V-9B-Thinking"
    snapshot = repo / "snapshots" / "abc123"
    shutil.copytree(tiny_folder, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_checkpoint("zai-org/GLM-4.1V-9B-Thinking") == snapshot
    assert load("zai-org/GLM-4.1V-9B-Thinking").folder == snapshot


def test_repo_id_not_in_cache_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no `hf` command: say where it comes from
    with pytest.raises(ModelError, match=r"not in the local Hugging Face cache .*with `pip install huggingface_hub`, "
                                         r"then `hf download zai-org/GLM-4.1V"):
        load("zai-org/GLM-4.1V-9B-Thinking")
    hf = tmp_path / "bin" / "hf"
    hf.write_text("#!/bin/sh\n")
    hf.chmod(0o755)
    with pytest.raises(ModelError, match=r"cache \(.*\); download it with `hf download zai-org/GLM-4.1V"):
        load("zai-org/GLM-4.1V-9B-Thinking")


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="no checkpoint folder"):
        load(tmp_path / "nope")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        load(tmp_path)


def test_folder_of_another_architecture(broken):
    (broken / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(ModelError, match="'llama' is not a GLM-4.1V-architecture checkpoint"):
        load(broken)


def test_missing_shard_is_named(tiny_folder, broken):
    state = load_file(str(tiny_folder / "model.safetensors"))
    (broken / "model.safetensors").unlink()
    save_weights(broken, state, shards=2)
    (broken / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelError, match="model-00002-of-00002.safetensors listed in model.safetensors.index.json"):
        load(broken)


def test_no_weights_at_all(broken):
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="has no model.safetensors"):
        load(broken)


def test_truncated_safetensors_is_named(broken):
    path = broken / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"model.safetensors is truncated: it has \d+ bytes"):
        load(broken)


def test_garbage_safetensors_is_named(broken):
    (broken / "model.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(ModelError, match="model.safetensors is not a readable safetensors file"):
        load(broken)


def test_key_mismatch_lists_missing_and_unexpected_together(tiny_folder, broken):
    state = load_file(str(tiny_folder / "model.safetensors"))
    state["model.language_model.layers.0.mlp.up_proj.weight"] = state.pop(
        "model.language_model.layers.0.mlp.gate_up_proj.weight")
    del state["lm_head.weight"]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(ModelError) as info:
        load(broken)
    message = str(info.value)
    assert "2 missing: lm_head.weight, model.language_model.layers.0.mlp.gate_up_proj.weight" in message
    assert "1 unexpected: model.language_model.layers.0.mlp.up_proj.weight" in message


def test_wrong_shape_is_named(tiny_folder, broken):
    state = load_file(str(tiny_folder / "model.safetensors"))
    state["model.language_model.norm.weight"] = torch.ones(7)
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(ModelError, match=r"wrong shape: model.language_model.norm.weight \[7\] in model.safetensors"):
        load(broken)


def test_unknown_dtype(tiny_folder):
    with pytest.raises(ModelError, match="unknown dtype 'float8'"):
        load(tiny_folder, dtype="float8")


def test_loaded_model_builds_no_autograd_graph(tiny_folder, prompt_inputs):
    glm = load(tiny_folder)
    assert not any(p.requires_grad for p in glm.model.parameters())
    assert not glm.model(**model_kwargs(prompt_inputs("image"))).requires_grad


def test_loading_and_answering_leave_torch_dynamo_unimported(tiny_folder):
    """Building the model on the meta device ran torch's decompositions (an embedding's random init,
    arange), whose first use imports torch._dynamo: a second of every glmv process's start. A fresh
    process loads, reads an image and answers without it (only --compile needs it)."""
    import subprocess
    import sys

    script = ("import sys, glmv_cli\n"
              "from glmv_cli.app.session import Session\n"
              "import io\n"
              "from PIL import Image\n"
              "png = io.BytesIO()\n"
              "Image.new('RGB', (64, 48), 'red').save(png, 'PNG')\n"
              "s = Session(sys.argv[1], device='cpu')\n"
              "s.run('What is this?', [png.getvalue()],\n"
              "      generation=glmv_cli.GenerationOptions(max_new_tokens=2))\n"
              "print('torch._dynamo' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tiny_folder)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
