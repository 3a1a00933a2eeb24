"""`glmv info`: what a checkpoint is and what it would cost, read from its files without loading it."""

from __future__ import annotations

import math

import torch

from glmv_cli import memory
from glmv_cli.loading import index_tensors, pick_device, pick_dtype, resolve_checkpoint, weight_files
from glmv_cli.model.config import Glm4vConfig


def describe(name: str, *, device: str = "auto", dtype: str = "auto") -> str:
    folder = resolve_checkpoint(name)
    cfg = Glm4vConfig.from_folder(folder)
    tensors = index_tensors(weight_files(folder))
    params = sum(math.prod(entry.shape) for _, entry in tensors.values())
    vision = sum(math.prod(e.shape) for k, (_, e) in tensors.items() if k.startswith("model.visual."))
    dev = pick_device(device)
    dt = pick_dtype(dtype, folder, dev)
    t, v = cfg.text, cfg.vision
    lines = [
        f"checkpoint   {name}",
        f"folder       {folder}",
        f"model        {cfg.model_type}: decoder {t.num_layers} layers, hidden {t.hidden_size}, "
        f"{t.num_heads} heads / {t.num_kv_heads} kv, vocab {t.vocab_size}, context {t.max_position_embeddings}",
        f"vision       {v.depth} blocks, hidden {v.hidden_size}, patch {v.patch_size}, merge {v.spatial_merge_size}",
        f"parameters   {_count(params)} (vision {_count(vision)})",
        *_memory(cfg, dev, dt),
        f"would run on {dev} in {str(dt).removeprefix('torch.')}",
    ]
    return "\n".join(lines)


def _memory(cfg: Glm4vConfig, dev: torch.device, dt: torch.dtype) -> list[str]:
    """The weights' bytes on `dev` per setting (load_model's own count), the KV cache's per token,
    and on a GPU whether each setting fits its free memory."""
    # int8 and int4 leave norms and convolutions (on a CPU the vision tower too) in the dtype it would run in
    settings = [("bfloat16", torch.bfloat16, None), ("float32", torch.float32, None), ("int8", dt, "int8"),
                ("int4", dt, "int4")]
    sizes = {label: memory.weight_bytes(cfg, d, q, dev) for label, d, q in settings}
    t = cfg.text
    per_token = t.kv_bytes(1, dt.itemsize)
    lines = [
        "weights      " + ", ".join(f"{label} {memory.size(n)}" for label, n in sizes.items())
        + f" (--quantize int8 or int4, the rest in {str(dt).removeprefix('torch.')})",
        f"kv cache     {memory.size(per_token)} a token in {str(dt).removeprefix('torch.')} "
        f"({memory.size(per_token * 8192)} for 8,192 tokens)",
    ]
    room = memory.device_room(dev)
    if room is not None:
        free, total = room.free, room.total
        verdicts = [f"{label} {'fits' if n + memory.HEADROOM <= free else 'does not fit'}"
                    for label, n in sizes.items()]
        lines.append(f"free         {memory.size(free)} of {memory.size(total)} on {memory.room_name(dev, room)}: "
                     f"{', '.join(verdicts)} (leaving {memory.size(memory.HEADROOM)} for the prompt)")
    return lines


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} K"
