"""`glmv quantize`: a checkpoint stored in int4 or int8 answers as `--quantize` does on the
original, loads without quantizing, and refuses what it cannot be (real processes, real files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import glmv_cli
from glmv_cli import memory
from glmv_cli.loading import STORED_KEY
from glmv_cli.model.config import Glm4vConfig
from glmv_cli.model.quant import Int8Linear
from glmv_cli.model.quant_int4 import Int4Linear
from tests.cli.conftest import glmv_env, run_glmv


@pytest.fixture(scope="module")
def stored(tiny, tmp_path_factory):
    """The tiny checkpoint stored in each scheme by the real command."""
    out = {}
    for scheme in ("int4", "int8"):
        folder = tmp_path_factory.mktemp(scheme) / "stored"
        run = run_glmv("quantize", folder, "--model", tiny, "--quantize", scheme)
        assert run.code == 0, run.err
        assert run.out == f"{folder}\n"  # the folder alone on stdout, for the next --model
        assert f"stored {tiny} in {scheme}: " in run.err and f"load it with --model {folder}" in run.err
        out[scheme] = folder
    return out


def test_the_stored_folder_is_a_whole_checkpoint(tiny, stored):
    folder = stored["int4"]
    config = json.loads((folder / "config.json").read_text())
    assert config[STORED_KEY]["scheme"] == "int4"
    source = {p.name for p in tiny.iterdir()}
    assert source <= {p.name for p in folder.iterdir()}  # tokenizer, templates, processor configs copied
    weights, original = (folder / "model.safetensors").stat().st_size, (tiny / "model.safetensors").stat().st_size
    assert weights < 0.6 * original  # (float32 -> int4 codes; the small tensors stay float)


def test_stored_int4_answers_as_quantize_int4_on_the_original(tiny, stored):
    args = ("Say something.", "-t", "0", "--max-new-tokens", "12", "--json")
    on_the_fly = run_glmv("ask", *args, "--model", tiny, "--quantize", "int4")
    from_store = run_glmv("ask", *args, "--model", stored["int4"])
    assert on_the_fly.code == from_store.code == 0, from_store.err
    assert from_store.json["completion_ids"] == on_the_fly.json["completion_ids"]


def test_stored_layers_load_as_stored(tiny, stored):
    """The same codes and scales as quantizing while loading (int4: the same logits bit for bit),
    int8 with its vision tower in int8 on a CPU too; the byte count the memory check uses."""
    cpu = torch.device("cpu")
    from_store = glmv_cli.load(stored["int4"], device="cpu")
    on_the_fly = glmv_cli.load(tiny, device="cpu", quantize="int4")
    layer = from_store.model.language_model.layers[0].mlp.gate_up_proj
    assert isinstance(layer, Int4Linear) and layer.cpu_layout
    assert torch.equal(layer.weight, on_the_fly.model.language_model.layers[0].mlp.gate_up_proj.weight)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.equal(from_store.model(input_ids=ids), on_the_fly.model(input_ids=ids))
    int8 = glmv_cli.load(stored["int8"], device="cpu")
    assert isinstance(int8.model.visual.blocks[0].attn.qkv, Int8Linear)
    assert int8.model.language_model.layers[0].self_attn.qkv_proj is not None  # int8's q/k/v fused as ever
    float32 = glmv_cli.load(tiny, device="cpu")
    a, b = float32.model(input_ids=ids)[0], int8.model(input_ids=ids)[0]
    assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.99
    cfg = Glm4vConfig.from_folder(tiny)
    for scheme, glm in (("int4", from_store), ("int8", int8)):
        dtype = glm.model.language_model.norm.weight.dtype
        assert memory.weight_bytes(cfg, dtype, scheme, cpu, stored=True) == memory.tensor_bytes(glm.model)


def test_sharded_checkpoints_in_and_out(tmp_path):
    """GLM-4.1V-9B comes in four files and stores in two (5 GiB shards): a sharded source, and a
    sharded, indexed result, load as one."""
    from glmv_cli.quantized import save_quantized
    from tests.reference import write_checkpoint

    source = write_checkpoint(tmp_path / "sharded", shards=3, seed=4)
    paths = save_quantized(source, tmp_path / "out", "int4", shard_bytes=200_000)
    assert len(paths) > 1 and (tmp_path / "out" / "model.safetensors.index.json").is_file()
    ids = torch.tensor([[3, 1, 4, 1, 5, 9]])
    stored = glmv_cli.load(tmp_path / "out", device="cpu").model(input_ids=ids)
    assert torch.equal(stored, glmv_cli.load(source, device="cpu", quantize="int4").model(input_ids=ids))


def test_what_a_stored_checkpoint_cannot_be_is_one_line(tiny, stored, tmp_path):
    run = run_glmv("ask", "hi", "--model", stored["int4"], "--quantize", "int8")
    assert run.code == 3 and run.err.count("\n") == 1, run.err
    assert "is stored in int4 (glmv quantize): load it without --quantize (and GLMV_QUANTIZE unset)" in run.err
    run = run_glmv("ask", "hi", "--model", stored["int4"], "--max-new-tokens", "2", env=glmv_env(GLMV_QUANTIZE="int4"))
    assert run.code == 0, run.err  # naming its own scheme is fine (a laptop's GLMV_QUANTIZE=int4)
    run = run_glmv("quantize", tmp_path / "again", "--model", stored["int4"])
    assert run.code == 3 and "already stored in int4; quantize the original checkpoint" in run.err
    run = run_glmv("quantize", stored["int8"], "--model", tiny)  # over an existing checkpoint: nothing lost
    assert run.code == 2 and "exists and is not empty; name a new folder" in run.err
    for out, words in ((tmp_path / "file", "is a file; name a new folder"), ("/proc/no/where", "cannot be made")):
        Path(tmp_path / "file").write_text("x")
        run = run_glmv("quantize", out, "--model", tiny)
        assert run.code == 2 and words in run.err and run.err.count("\n") == 1, run.err
    half = tmp_path / "half"  # a folder glmv ask would refuse is refused now, not once stored
    half.mkdir()
    for path in tiny.iterdir():
        if path.name != "tokenizer.json":
            (half / path.name).write_bytes(path.read_bytes())
    run = run_glmv("quantize", tmp_path / "from-half", "--model", half)
    assert run.code == 3 and "has no tokenizer.json" in run.err and not (tmp_path / "from-half").exists()
    assert run_glmv("info", "--model", half).code == 3
    assert json.loads((stored["int8"] / "config.json").read_text())[STORED_KEY]["scheme"] == "int8"
    future = tmp_path / "future"
    future.mkdir()
    for path in stored["int4"].iterdir():
        (future / path.name).write_bytes(path.read_bytes())
    config = json.loads((future / "config.json").read_text())
    config[STORED_KEY]["format"] = 99  # written by a later glmv
    (future / "config.json").write_text(json.dumps(config))
    run = run_glmv("ask", "hi", "--model", future)
    assert run.code == 3 and "which this glmv does not read" in run.err


def test_info_says_how_a_checkpoint_is_stored(stored):
    run = run_glmv("info", "--model", stored["int4"], "--device", "cpu")
    assert run.code == 0, run.err
    lines = dict(line.split(None, 1) for line in run.out.splitlines())
    assert lines["parameters"].endswith(", stored in int4 (glmv quantize)")
    assert lines["weights"].startswith("int4 ") and "--quantize" not in lines["weights"]
