"""`glmv info`: a checkpoint's shape and what it would cost, read from its files without loading it:
the weights per setting (what loading allocates), the KV cache a token, and on a GPU what fits."""

from __future__ import annotations

import re

import torch

from glmv_cli import info, memory
from glmv_cli.host_memory import host_room
from glmv_cli.model.config import Glm4vConfig
from tests.cli.conftest import glmv_env, run_glmv


def test_info_states_the_memory_loading_takes(tiny):
    run = run_glmv("info", "--model", tiny, "--device", "cpu")
    assert run.code == 0, run.err
    lines = dict(line.split(None, 1) for line in run.out.splitlines())
    cfg, cpu = Glm4vConfig.from_folder(tiny), torch.device("cpu")
    sizes = [memory.size(memory.weight_bytes(cfg, dt, q, cpu))
             for dt, q in ((torch.bfloat16, None), (torch.float32, None), (torch.float32, "int8"),
                           (torch.float32, "int4"))]
    assert lines["weights"] == (f"bfloat16 {sizes[0]}, float32 {sizes[1]}, int8 {sizes[2]}, int4 {sizes[3]} "
                                "(--quantize int8 or int4, the rest in float32)")
    per_token = 2 * cfg.text.num_layers * cfg.text.num_kv_heads * cfg.text.head_dim * 4
    assert lines["kv"].startswith(f"cache     {memory.size(per_token)} a token in float32")
    assert lines["would"] == "run on cpu in float32"
    room = host_room()  # on Linux, the machine's memory or its cgroup's limit, as in this process
    if room is not None:
        total, verdicts = re.fullmatch(r"[\d.]+ \w+ of ([\d.]+ \w+) on cpu \((.*)\): (.*) \(leaving 1.0 GiB "
                                       r"for the prompt\)", lines["free"]).group(1, 3)
        assert total == memory.size(room.total) and f"on cpu ({room.where})" in lines["free"]
        assert verdicts == "bfloat16 fits, float32 fits, int8 fits, int4 fits"  # a tiny checkpoint


def test_info_on_a_gpu_says_which_setting_fits(tiny, monkeypatch):
    cfg, cuda = Glm4vConfig.from_folder(tiny), torch.device("cuda")
    int8 = memory.weight_bytes(cfg, torch.bfloat16, "int8", cuda)
    monkeypatch.setattr(memory, "device_room", lambda device: memory.Room(int8 + memory.HEADROOM, 2 * memory.HEADROOM))
    monkeypatch.setattr(memory, "device_name", lambda device: "cuda (a small card)")
    free = info._memory(cfg, cuda, torch.bfloat16)[-1]
    assert free == (f"free         {memory.size(int8 + memory.HEADROOM)} of 2.0 GiB on cuda (a small card): "
                    "bfloat16 does not fit, float32 does not fit, int8 fits, int4 fits (leaving 1.0 GiB for the "
                    "prompt)")


def test_info_on_a_card_without_bfloat16_says_what_that_costs(tiny, monkeypatch):
    """A T4 (compute capability 7.5) and a bfloat16 model: the load's note, last; none in float32."""
    from glmv_cli import kernels

    monkeypatch.setattr(kernels, "cuda_capability", lambda device: (7, 5))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(memory, "device_room", lambda device: None)
    lines = info.describe(str(tiny), device="cuda", dtype="bfloat16").splitlines()
    assert lines[-2] == "would run on cuda in bfloat16"
    assert lines[-1].startswith("note         Tesla T4 has no bfloat16 arithmetic (compute capability 7.5")
    assert info.describe(str(tiny), device="cuda", dtype="float32").splitlines()[-1] == "would run on cuda in float32"


def test_model_settings_come_from_the_environment(tiny):
    """GLMV_DEVICE, GLMV_DTYPE and GLMV_QUANTIZE set what --device, --dtype and --quantize do (a
    16 GB laptop keeps GLMV_QUANTIZE=int8); a flag still wins."""
    run = run_glmv("info", "--model", tiny, env=glmv_env(GLMV_DTYPE="bfloat16", GLMV_DEVICE="cpu"))
    assert run.code == 0, run.err
    assert run.out.splitlines()[-1] == "would run on cpu in bfloat16"
    run = run_glmv("info", "--model", tiny, "--dtype", "float32", env=glmv_env(GLMV_DTYPE="bfloat16"))
    assert run.out.splitlines()[-1] == "would run on cpu in float32"
    run = run_glmv("ask", "--model", tiny, "hi", env=glmv_env(GLMV_QUANTIZE="int3"))
    assert run.code == 2 and "(env var: 'GLMV_QUANTIZE')" in run.err and "'int3' is not one of 'int8'" in run.err
    if not torch.cuda.is_available():
        run = run_glmv("ask", "--model", tiny, "hi", env=glmv_env(GLMV_DEVICE="cuda"))
        assert run.code == 2 and run.err.startswith("glmv: error: --device cuda: no CUDA device"), run.err


def test_info_says_how_the_checkpoint_replies(tiny, tool_scripted):
    plain, tools = (run_glmv("info", "--model", folder, "--device", "cpu") for folder in (tiny, tool_scripted))
    assert plain.code == tools.code == 0, plain.err + tools.err
    replies = [dict(line.split(None, 1) for line in run.out.splitlines())["replies"] for run in (plain, tools)]
    assert replies[0] == ("<think>..</think><answer>..</answer>, no thinking switch (--no-think closes the "
                          "thought), no tools")  # GLM-4.1V's template
    assert replies[1] == ("<think>..</think> then the answer, thinking switch (--no-think), tool calls "
                          "(glmv serve: tools)")  # a GLM-4.6V-style one
