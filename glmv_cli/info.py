"""`glmv info`: what a checkpoint is and what it would cost, read from its files without loading it."""

from __future__ import annotations

import math

import torch

from glmv_cli import memory
from glmv_cli.loading import (
    check_device,
    emulated_note,
    pick_device,
    pick_dtype,
    resolve_checkpoint,
    stored_quantization,
)
from glmv_cli.model.config import Glm4vConfig
from glmv_cli.model.glm4v import Glm4v
from glmv_cli.tokenizer import Tokenizer


def describe(name: str, *, device: str = "auto", dtype: str = "auto") -> str:
    check_device(device)  # (the same one-line error as glmv ask's)
    folder = resolve_checkpoint(name)
    cfg = Glm4vConfig.from_folder(folder)
    Tokenizer.from_folder(folder)  # (what ask would refuse, info does not call fine)
    with torch.device("meta"):  # the model's parameters (a stored checkpoint's files hold packed codes)
        shapes = {k: v.shape for k, v in Glm4v(cfg).state_dict().items()}
    params = sum(math.prod(shape) for shape in shapes.values())
    vision = sum(math.prod(shape) for k, shape in shapes.items() if k.startswith("model.visual."))
    stored = stored_quantization(folder)
    dev = pick_device(device)
    dt = pick_dtype(dtype, folder, dev)
    t, v = cfg.text, cfg.vision
    lines = [
        f"checkpoint   {name}",
        f"folder       {folder}",
        f"model        {cfg.model_type}: decoder {t.num_layers} layers, hidden {t.hidden_size}, "
        f"{t.num_heads} heads / {t.num_kv_heads} kv, vocab {t.vocab_size}, context {t.max_position_embeddings}",
        f"vision       {v.depth} blocks, hidden {v.hidden_size}, patch {v.patch_size}, merge {v.spatial_merge_size}",
        f"parameters   {_count(params)} (vision {_count(vision)})"
        + (f", stored in {stored} (glmv quantize)" if stored else ""),
        *_memory(cfg, dev, dt, stored),
        _replies(folder),
        f"would run on {dev} in {str(dt).removeprefix('torch.')}",
    ]
    if note := emulated_note(dev, dt):  # (a GPU Triton cannot compile for in this dtype)
        lines.append(f"note         {note}")
    return "\n".join(lines)


def _replies(folder) -> str:
    """How the checkpoint answers, from its chat template and processor: tags, a thinking switch, tools."""
    from glmv_cli.prompt import PromptConfig

    config = PromptConfig.from_folder(folder)
    return ("replies      <think>..</think>" + ("<answer>..</answer>" if config.answer_tags else " then the answer")
            + (", thinking switch (--no-think)" if config.thinking_switch
               else ", no thinking switch (--no-think closes the thought)")
            + (", tool calls (glmv serve: tools)" if config.takes_tools else ", no tools"))


def _memory(cfg: Glm4vConfig, dev: torch.device, dt: torch.dtype, stored: str | None = None) -> list[str]:
    """The weights' bytes on `dev` per setting (load_model's own count; a stored checkpoint has
    one), the KV cache's per token, and whether each setting fits the free memory."""
    # int8 and int4 leave norms and convolutions (on a CPU the vision tower too) in the dtype it would run in
    settings = ([(stored, dt, stored)] if stored else
                [("bfloat16", torch.bfloat16, None), ("float32", torch.float32, None), ("int8", dt, "int8"),
                 ("int4", dt, "int4")])
    sizes = {label: memory.weight_bytes(cfg, d, q, dev, stored=bool(stored)) for label, d, q in settings}
    t = cfg.text
    per_token, window = t.kv_bytes(1, dt.itemsize), min(8192, t.max_position_embeddings)
    lines = [
        "weights      " + ", ".join(f"{label} {memory.size(n)}" for label, n in sizes.items())
        + (f" (the rest in {str(dt).removeprefix('torch.')})" if stored else
           f" (--quantize int8 or int4, the rest in {str(dt).removeprefix('torch.')})"),
        f"kv cache     {memory.size(per_token)} a token in {str(dt).removeprefix('torch.')} "
        f"({memory.size(per_token * window)} for {window:,} tokens)",
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
