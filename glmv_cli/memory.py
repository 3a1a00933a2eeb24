"""Device memory: what a model's weights take, whether they fit, and out-of-memory failures as one line.

`weight_bytes` is exact: it builds the meta-device model `load_model` builds (the dtype, the int8
or int4 layers and their scales) and counts its tensors. `check_fits` compares that with the device's free
memory before a byte is read, so a 12 GB card told to load GLM-4.1V-9B in bfloat16 (19.2 GiB) says
so at once, with the flag that fits (`--quantize int8`: 9.6 GiB), instead of failing a minute into
the load with the allocator's message; on a CPU, a 16 GB laptop is told the same before Linux's OOM
killer ends the process with a bare "Killed" (host_memory.py). `out_of_memory` turns the
allocator's failure (CUDA, Apple's Metal, a CPU's) into a GlmvError naming what ran out and what to
send less of.
"""

from __future__ import annotations

import itertools
import logging
import re

import torch
from torch import nn

from glmv_cli.errors import GlmvError, ModelError
from glmv_cli.host_memory import MACHINE, REMEDIES, Room, host_room

log = logging.getLogger(__name__)

GiB = 2**30
# what a question needs beyond the weights: the KV cache (40 kB a token for GLM-4.1V-9B in
# bfloat16), a 2048-token prefill chunk's activations, the vision tower's on a large image
HEADROOM = GiB


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of the storage behind every parameter and buffer, each storage once (the fused q/k/v
    weight and its three views are one); a meta tensor counts its own size (it has no storage)."""
    seen, total = set(), 0
    for t in itertools.chain(model.parameters(), model.buffers()):
        meta = t.device.type == "meta"
        key = id(t) if meta else t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size() if meta else t.untyped_storage().nbytes()
    return total


def weight_bytes(config, dtype: torch.dtype, quantize: str | None, device: torch.device, stored: bool = False
                 ) -> int:
    """What `load_model(folder, device, dtype, quantize)` allocates for the weights, in bytes
    (`stored`: of a checkpoint `glmv quantize` stored in `quantize`)."""
    from glmv_cli.loading import meta_model
    from glmv_cli.model.quant import Int8Linear

    model = meta_model(config, dtype, quantize, device, stored=stored)
    total = tensor_bytes(model)
    if device.type == "cpu":  # Int8Linear.ready() keeps a CPU layer's scales in bfloat16
        total -= sum(m.scales.numel() * (m.scales.element_size() - 2) for m in model.modules()
                     if isinstance(m, Int8Linear))
    return total


def device_room(device: torch.device) -> Room | None:
    """The room for the model on `device`, None where not known. CUDA: the device's free memory
    plus the blocks torch's allocator holds unused (a model loaded and dropped earlier in this
    process). Metal: Apple's recommended working set for the GPU (about two thirds of a Mac's
    memory) less what its driver holds; past it macOS swaps, or the allocation fails. CPU (Linux):
    the host's available memory, or what a cgroup or ulimit -v leaves, if less (host_memory.py)."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return Room(int(free + cached), int(total))
    if device.type == "mps" and torch.backends.mps.is_available():
        total = int(torch.mps.recommended_max_memory())
        return Room(max(0, total - int(torch.mps.driver_allocated_memory())), total)
    if device.type == "cpu":
        return host_room()
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def size(n: float) -> str:
    """Bytes as '19.2 GiB', '21.3 MiB' or '4 KiB'."""
    if n >= GiB:
        return f"{n / GiB:.1f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def check_fits(need: int, config, dtype: torch.dtype, quantize: str | None, device: torch.device,
               room: tuple | None, stored: bool = False) -> None:
    """Raises a ModelError naming a setting that fits when `need` bytes of weights cannot fit the
    device's free memory (`room`: a Room or its (free, total); None where not known); warns when
    they leave less than HEADROOM for the questions, or fit only by swapping."""
    if room is None:
        return
    room = Room(*room)
    free = room.free
    short = f"the weights need {size(need)} ({_setting(dtype, quantize)}) but {_room_text(device, room)}"
    def advice(free: int, **kw) -> str:
        return what_fits(config, dtype, quantize, device, free, stored=stored, **kw)

    if need > free and device.type == "mps":  # unified memory: it may still run, swapping
        log.warning("%s: expect heavy swapping or an out-of-memory error; %s", short, advice(free))
    elif need > free and need + HEADROOM <= free + room.swap:
        log.warning("%s: the rest would go to swap, and every token reads every weight, so expect minutes a "
                    "token; %s", short, advice(free, where=room.where))
    elif need > free:
        raise ModelError(f"{short}: {advice(free, where=room.where)}")
    elif free - need < HEADROOM:
        log.warning("the weights (%s) leave %s free on %s: a large image, PDF or video may run out of memory; "
                    "%s", size(need), size(free - need), room_name(device, room),
                    advice(free - HEADROOM, warn=True, where=room.where))


def room_name(device: torch.device, room: Room) -> str:
    """'cuda:0 (NVIDIA ...)', or on a CPU 'cpu (this machine's memory)': the device and what binds."""
    return device_name(device) + (f" ({room.where})" if room.where else "")


def _room_text(device: torch.device, room: Room) -> str:
    """'cuda:0 (NVIDIA ...) has 11.3 GiB free of 12.0 GiB', or on a CPU what binds and leaves what."""
    if device.type == "mps":
        return (f"Metal's recommended working set on this Mac has {size(room.free)} free of "
                f"{size(room.total)}")
    if room.where:
        return f"{room.where} has {size(room.free)} free of {size(room.total)}"
    return f"{device_name(device)} has {size(room.free)} free of {size(room.total)}"


def _setting(dtype: torch.dtype, quantize: str | None) -> str:
    return quantize or str(dtype).removeprefix("torch.")


def what_fits(config, dtype: torch.dtype, quantize: str | None, device: torch.device, free: int | None,
              warn: bool = False, where: str = "", stored: bool = False) -> str:
    """Advice: the first of --dtype bfloat16 (from float32), --quantize int8 and --quantize int4
    whose weights fit in `free` bytes (None: not known, the first of them), else freeing memory."""
    options = []
    if dtype == torch.float32:
        options.append(("--dtype bfloat16", torch.bfloat16, quantize))
    narrower = () if stored else {None: ("int8", "int4"), "int8": ("int4",)}.get(quantize, ())
    for q in narrower:
        options.append((f"--dtype bfloat16 --quantize {q}" if dtype == torch.float32 else f"--quantize {q}",
                        torch.bfloat16 if dtype == torch.float32 else dtype, q))
    for flag, dt, q in options:
        need = weight_bytes(config, dt, q, device, stored)
        if free is None or need <= free:
            return f"{flag} would leave more ({size(need)} of weights)" if warn else f"{flag} needs {size(need)}"
    if device.type == "mps":
        return "close other programs to free memory, or run on the CPU with --device cpu"
    if device.type != "cuda":
        return REMEDIES.get(where, REMEDIES[MACHINE])
    return ("close other programs using it (nvidia-smi lists them)" if warn else
            "close other programs using the GPU (nvidia-smi lists them), or run on the CPU with --device cpu")


def is_out_of_memory(e: BaseException) -> bool:
    """An allocator's failure: CUDA's OutOfMemoryError, Metal's and the CPU's RuntimeErrors."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def state(e: BaseException, device: torch.device) -> str:
    """' (it asked for 7.9 GiB more; 9.9 GiB in use by glmv, 1.2 GiB free of 11.6 GiB)', what is known of it."""
    known = []
    asked = re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]i?B)", str(e))
    if asked:
        known.append(f"it asked for {asked.group(1)} more")
    room = device_room(device)
    if room is not None and device.type == "cpu":
        known.append(f"{size(room.free)} free of {size(room.total)}")
    elif room is not None:
        held = torch.cuda.memory_allocated(device) if device.type == "cuda" else torch.mps.current_allocated_memory()
        known.append(f"{size(held)} in use by glmv, {size(room.free)} free of {size(room.total)}")
    return f" ({'; '.join(known)})" if known else ""


def out_of_memory(e: BaseException, device: torch.device, doing: str, advice: str,
                  kind: type[GlmvError] = GlmvError) -> GlmvError:
    """The allocator's failure `e` while `doing` something, as one line of `kind` (cached blocks
    are handed back first, so the numbers say what glmv holds and the next question has room)."""
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return kind(f"out of memory on {device_name(device)} {doing}{state(e, device)}: {advice}")
