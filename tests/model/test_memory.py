"""Device memory: the weights' size is what loading allocates, a model too big for the device's free
memory is refused before a byte is read (naming a setting that fits), and the allocator's failures
while loading or answering become one GlmvError line; a conversation stays usable after one."""

from __future__ import annotations

import logging

import pytest
import torch

import glmv_cli
from glmv_cli import memory
from glmv_cli.errors import InputError, ModelError
from glmv_cli.host_memory import CGROUP, MACHINE, ULIMIT, Room
from glmv_cli.loading import load_model
from glmv_cli.model.config import Glm4vConfig
from glmv_cli.random_checkpoint import SHAPES, build_tokenizer, config_dict

GiB = 2**30


@pytest.fixture(scope="module")
def config_9b() -> Glm4vConfig:
    text, vision = SHAPES["9b"]
    return Glm4vConfig.from_dict(config_dict(build_tokenizer(), text, vision))


@pytest.mark.parametrize("dtype,quantize", [(torch.float32, None), (torch.bfloat16, None), (torch.float32, "int8"),
                                            (torch.bfloat16, "int8"), (torch.float32, "int4"),
                                            (torch.bfloat16, "int4")])
def test_weight_bytes_are_what_loading_allocates(tiny_folder, dtype, quantize):
    cpu = torch.device("cpu")
    model = load_model(tiny_folder, cpu, dtype, quantize)
    predicted = memory.weight_bytes(Glm4vConfig.from_folder(tiny_folder), dtype, quantize, cpu)
    assert predicted == memory.tensor_bytes(model)


def test_weight_bytes_of_glm41v_9b(config_9b):
    """bfloat16: GLM-4.1V-9B-Thinking's 20.6 GB of safetensors; int8 on a GPU about half of that (the
    vision tower too), on a CPU a little more (its vision tower stays in the model's dtype)."""
    bf16 = memory.weight_bytes(config_9b, torch.bfloat16, None, torch.device("cuda"))
    assert 20.5e9 < bf16 < 20.7e9
    gpu_int8 = memory.weight_bytes(config_9b, torch.bfloat16, "int8", torch.device("cuda"))
    cpu_int8 = memory.weight_bytes(config_9b, torch.bfloat16, "int8", torch.device("cpu"))
    assert 0.49 < gpu_int8 / bf16 < 0.51 and gpu_int8 < cpu_int8 < 0.56 * bf16
    float32 = memory.weight_bytes(config_9b, torch.float32, None, torch.device("cuda"))
    assert abs(float32 - 2 * bf16) < 1024  # (the rope frequencies are float32 in both)


def test_too_big_for_the_free_memory_names_the_setting_that_fits(config_9b):
    cuda = torch.device("cuda")
    bf16 = memory.weight_bytes(config_9b, torch.bfloat16, None, cuda)
    with pytest.raises(ModelError) as e:  # a 12 GB card
        memory.check_fits(bf16, config_9b, torch.bfloat16, None, cuda, room=(int(11.3 * GiB), 12 * GiB))
    message = str(e.value)
    assert "the weights need 19.2 GiB (bfloat16)" in message and "11.3 GiB free of 12.0 GiB" in message
    assert message.endswith("--quantize int8 needs 9.6 GiB")
    with pytest.raises(ModelError, match=r"\(float32\).*: --dtype bfloat16 needs 19.2 GiB$"):  # a 24 GB card
        memory.check_fits(2 * bf16, config_9b, torch.float32, None, cuda, room=(23 * GiB, 24 * GiB))
    with pytest.raises(ModelError, match=r"\(float32\).*: --dtype bfloat16 --quantize int8 needs 9.6 GiB$"):
        memory.check_fits(2 * bf16, config_9b, torch.float32, None, cuda, room=(12 * GiB, 12 * GiB))
    with pytest.raises(ModelError, match=r"\(bfloat16\).*7.5 GiB free of 8.0 GiB: --quantize int4 needs 6.1 GiB$"):
        memory.check_fits(bf16, config_9b, torch.bfloat16, None, cuda, room=(int(7.5 * GiB), 8 * GiB))  # an 8 GB card
    with pytest.raises(ModelError, match=r"\(int8\).*: --quantize int4 needs 6.1 GiB$"):
        memory.check_fits(bf16 // 2, config_9b, torch.bfloat16, "int8", cuda, room=(int(7.5 * GiB), 8 * GiB))
    with pytest.raises(ModelError, match=r"\(int4\).*: close other programs using the GPU .* --device cpu$"):
        memory.check_fits(bf16 // 3, config_9b, torch.bfloat16, "int4", cuda, room=(4 * GiB, 4 * GiB))


def test_weights_that_leave_little_room_are_a_warning(config_9b, caplog):
    cuda = torch.device("cuda")
    int8 = memory.weight_bytes(config_9b, torch.bfloat16, "int8", cuda)
    with caplog.at_level(logging.WARNING, logger="glmv_cli.memory"):
        memory.check_fits(int8, config_9b, torch.bfloat16, "int8", cuda, room=(int8 + GiB // 2, 12 * GiB))
        assert "leave 512.0 MiB free" in caplog.text and "may run out of memory" in caplog.text
        caplog.clear()
        memory.check_fits(int8, config_9b, torch.bfloat16, "int8", cuda, room=(int8 + 2 * GiB, 12 * GiB))
        assert caplog.text == ""


def test_loading_is_refused_before_any_allocation(tiny_folder, monkeypatch):
    """On a device whose free memory (as CUDA reports it) cannot hold the weights, load_model
    raises before giving the model storage: no device is touched (this machine has none)."""
    cfg = Glm4vConfig.from_folder(tiny_folder)
    need = memory.weight_bytes(cfg, torch.float32, None, torch.device("cuda"))
    half = memory.weight_bytes(cfg, torch.bfloat16, None, torch.device("cuda"))
    monkeypatch.setattr(memory, "device_room", lambda device: (need - 1, 8 * GiB))
    monkeypatch.setattr(torch.nn.Module, "to_empty", _never)
    with pytest.raises(ModelError, match=f"--dtype bfloat16 needs {memory.size(half)}$"):
        load_model(tiny_folder, torch.device("cuda"), torch.float32)


def _never(*args, **kwargs):
    raise AssertionError("storage was allocated")


def test_running_out_while_loading_is_a_model_error(tiny_folder, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 8589934592 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr("glmv_cli.loading._fill", fail)
    with pytest.raises(ModelError, match=r"^out of memory on cpu loading the weights( \(.* free of .*\))?: "
                                         r"--dtype bfloat16 needs"):
        load_model(tiny_folder, torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("error,expected", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 17.80 GB, other allocations: 1.2 GB)"), True),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 80000000000 bytes."), True),
    (RuntimeError("Expected all tensors to be on the same device"), False),
    (ValueError("out of memory"), False),
])
def test_which_failures_are_out_of_memory(error, expected):
    assert memory.is_out_of_memory(error) is expected


def test_a_question_that_runs_out_of_memory_leaves_the_conversation_usable(tiny_folder, monkeypatch):
    """The failure is an InputError saying what to send less of; the question does not join the
    history, and the next, smaller question is answered as in a fresh conversation."""
    session = glmv_cli.Session(str(tiny_folder), device="cpu", dtype="float32")
    model = session.load().model
    real = type(model).prefill

    def prefill(self, *args, **kwargs):
        if kwargs["input_ids"].shape[-1] > 30:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 7.91 GiB.")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "prefill", prefill)
    chat = session.conversation()
    gen = glmv_cli.GenerationOptions(max_new_tokens=4)
    with pytest.raises(InputError, match=r"^out of memory on cpu reading a \d+-token prompt \(it asked for "
                                         r"7.91 GiB more(; .* free of .*)?\): send less: smaller images "
                                         r"\(--max-pixels\)"):
        chat.run("Describe the quick brown fox that jumps over the lazy dog, at length. " * 3, generation=gen)
    assert chat.turns == [] and chat.transcript() == session.conversation().transcript()
    answer = chat.run("Say something", generation=gen)
    assert answer.usage.prompt_tokens <= 30
    assert answer.raw == session.run("Say something", generation=gen).raw


def test_on_a_mac_too_big_is_a_warning_with_the_setting_that_fits(config_9b, monkeypatch, caplog):
    """Metal shares the Mac's memory: past Apple's recommended working set (here a 16 GB Mac's
    10.7 GiB) the load may still run, swapping, so it is a warning that names what fits."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: int(10.7 * GiB))
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: GiB // 2)
    mps = torch.device("mps")
    room = memory.device_room(mps)
    assert room == memory.Room(int(10.7 * GiB) - GiB // 2, int(10.7 * GiB))
    bf16 = memory.weight_bytes(config_9b, torch.bfloat16, None, mps)
    with caplog.at_level(logging.WARNING, logger="glmv_cli.memory"):
        memory.check_fits(bf16, config_9b, torch.bfloat16, None, mps, room)
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage() == (
        "the weights need 19.2 GiB (bfloat16) but Metal's recommended working set on this Mac has 10.2 GiB free of "
        "10.7 GiB: expect heavy swapping or an out-of-memory error; --quantize int8 needs 9.6 GiB")


def test_on_a_cpu_too_big_is_refused_naming_what_binds_and_what_fits(config_9b):
    """A 16 GB laptop: Linux's OOM killer would end the load with a bare "Killed"; instead one line
    says what the machine (or its container's cgroup) has, and the setting that fits."""
    cpu = torch.device("cpu")
    bf16 = memory.weight_bytes(config_9b, torch.bfloat16, None, cpu)
    int8 = memory.weight_bytes(config_9b, torch.bfloat16, "int8", cpu)
    laptop = memory.Room(int(14.1 * GiB), int(15.5 * GiB), 0, MACHINE)
    with pytest.raises(ModelError) as e:
        memory.check_fits(bf16, config_9b, torch.bfloat16, None, cpu, laptop)
    assert str(e.value) == ("the weights need 19.2 GiB (bfloat16) but this machine's memory has 14.1 GiB free of "
                            f"15.5 GiB: --quantize int8 needs {memory.size(int8)}")
    int4 = memory.weight_bytes(config_9b, torch.bfloat16, "int4", cpu)
    container = memory.Room(8 * GiB, 8 * GiB, 0, CGROUP)  # an 8 GB container: int4 fits
    with pytest.raises(ModelError) as e:
        memory.check_fits(bf16, config_9b, torch.bfloat16, None, cpu, container)
    assert str(e.value).endswith("but the cgroup memory limit of this container or service has 8.0 GiB free of "
                                 f"8.0 GiB: --quantize int4 needs {memory.size(int4)}")
    container = memory.Room(6 * GiB, 6 * GiB, 0, CGROUP)  # nothing fits
    with pytest.raises(ModelError) as e:
        memory.check_fits(bf16, config_9b, torch.bfloat16, None, cpu, container)
    assert str(e.value).endswith("but the cgroup memory limit of this container or service has 6.0 GiB free of "
                                 "6.0 GiB: raise the limit (docker run -m, systemd MemoryMax=) or close other "
                                 "programs in it")
    with pytest.raises(ModelError, match=r"set by ulimit -v has 4.0 GiB free of 6.0 GiB: "
                                         r"raise it \(ulimit -v unlimited\)$"):
        memory.check_fits(int8, config_9b, torch.bfloat16, "int8", cpu, memory.Room(4 * GiB, 6 * GiB, 0, ULIMIT))


def test_on_a_cpu_weights_that_fit_only_with_swap_are_a_warning(config_9b, caplog):
    cpu = torch.device("cpu")
    bf16 = memory.weight_bytes(config_9b, torch.bfloat16, None, cpu)
    with caplog.at_level(logging.WARNING, logger="glmv_cli.memory"):
        memory.check_fits(bf16, config_9b, torch.bfloat16, None, cpu,
                          memory.Room(int(14.1 * GiB), int(15.5 * GiB), 8 * GiB, MACHINE))
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith("the weights need 19.2 GiB (bfloat16) but this machine's memory has 14.1 GiB free")
    assert "the rest would go to swap" in message and message.endswith("--quantize int8 needs 10.4 GiB")
    with pytest.raises(ModelError):  # swap that cannot hold the rest and a question's headroom
        memory.check_fits(bf16, config_9b, torch.bfloat16, None, cpu,
                          memory.Room(int(14.1 * GiB), int(15.5 * GiB), 5 * GiB, MACHINE))


def test_a_cpu_load_is_checked_against_the_host(tiny_folder, monkeypatch):
    """load_model on the CPU asks host_memory for the room, and refuses before any allocation."""
    cfg, cpu = Glm4vConfig.from_folder(tiny_folder), torch.device("cpu")
    need = memory.weight_bytes(cfg, torch.float32, None, cpu)
    monkeypatch.setattr(memory, "host_room", lambda: Room(need - 1, 8 * GiB, 0, CGROUP))
    monkeypatch.setattr(torch.nn.Module, "to_empty", _never)
    with pytest.raises(ModelError, match=r"cgroup memory limit .* has .* free of 8.0 GiB: --dtype bfloat16 needs"):
        load_model(tiny_folder, cpu, torch.float32)


def test_a_kv_cache_the_host_cannot_hold_is_refused_and_the_conversation_goes_on(tiny_folder, monkeypatch):
    """On a CPU the KV cache (zeroed, so every page is taken at once) is checked against the host's
    room: past it the question fails as an out-of-memory one, before a token, and does not join
    the history; a question with fewer new tokens is then answered."""
    session = glmv_cli.Session(str(tiny_folder), device="cpu", dtype="float32")
    cfg = session.load().model.cfg.text
    per_position = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 4
    monkeypatch.setattr(memory, "host_room", lambda: Room(1000 * per_position, 8 * GiB, 0, CGROUP))
    chat = session.conversation()
    with pytest.raises(InputError, match=r"^out of memory on cpu reading a \d+-token prompt \(it asked for 2.0 MiB "
                                         r"more; 1000 KiB free of 8.0 GiB\): send less: .* or answer \(--max-new"):
        chat.run("Say something", generation=glmv_cli.GenerationOptions(max_new_tokens=2000))
    assert chat.turns == []
    answer = chat.run("Say something", generation=glmv_cli.GenerationOptions(max_new_tokens=4))
    assert answer.usage.completion_tokens > 0 and len(chat.turns) == 2
