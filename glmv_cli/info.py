"""`glmv info`: what a checkpoint is and what it would cost, read from its files without loading it."""

from __future__ import annotations

import math

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
        "memory       " + ", ".join(f"{label} {params * size / 2**30:.2f} GiB"
                                    for label, size in (("bfloat16", 2), ("float16", 2), ("float32", 4))),
        f"would run on {dev} in {str(dt).removeprefix('torch.')}",
    ]
    return "\n".join(lines)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} K"
