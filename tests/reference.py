"""Tiny random GLM-4.1V checkpoints in the real Hugging Face layout, and the transformers reference.

`write_checkpoint(folder, ...)` writes what a hub checkpoint folder holds: config.json (hub layout
with legacy `rope_scaling` + `partial_rotary_factor`, or the newer `rope_parameters`), weights as
model.safetensors or shards + model.safetensors.index.json, tokenizer.json / tokenizer_config.json
with the GLM special tokens, the official chat_template.jinja, preprocessor_config.json,
video_preprocessor_config.json and generation_config.json. The weights come from transformers'
own `Glm4vForConditionalGeneration` (seeded, then perturbed so that no norm is exactly one and no
bias exactly zero), so both implementations load the same files.

`reference_model`, `reference_processor` (the real `Glm4vProcessor`, PIL image backend, a
plain-torch stand-in for the video processor's three torchvision calls) and
`building_block_logits` live in glmv_cli/reference.py (the benchmark uses them too).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from glmv_cli.random_checkpoint import (  # noqa: F401  (re-exported for the tests)
    CHAT_TEMPLATE,
    GLM_SPECIAL_TOKENS,
    SHAPES,
    build_tokenizer,
    config_dict,
    write_side_files,
)
from glmv_cli.reference import building_block_logits, reference_model, reference_processor  # noqa: F401

TINY_TEXT, TINY_VISION = SHAPES["tiny"]


def _config_dict(tok, text: dict, vision: dict, layout: str) -> dict:
    config = config_dict(tok, {**TINY_TEXT, **text}, {**TINY_VISION, **vision}, layout)
    config["torch_dtype"] = "float32"
    return config


@torch.no_grad()
def random_state_dict(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """transformers' own init for this config, then perturbed: norms != 1 and biases != 0 (a
    dropped norm or bias must show), matrices 3x wider than the 0.02 init (otherwise a random model
    repeats one token forever and greedy comparisons prove little) and a sharper lm_head."""
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration

    torch.manual_seed(seed)
    model = Glm4vForConditionalGeneration(Glm4vConfig(**config))
    g = torch.Generator().manual_seed(seed + 1)
    state = {}
    for name, p in model.state_dict().items():
        p = p.clone()
        if name.endswith("norm.weight") or "layernorm" in name or "norm1" in name or "norm2" in name:
            p += 0.1 * torch.randn(p.shape, generator=g)
        elif name.endswith(".bias"):
            p += 0.05 * torch.randn(p.shape, generator=g)
        if name == "lm_head.weight":
            p *= 8.0
        elif p.dim() >= 2:
            p *= 3.0
        state[name] = p.contiguous()
    return state


def save_weights(folder: Path, state: dict[str, torch.Tensor], shards: int = 1) -> None:
    """model.safetensors, or `shards` files + model.safetensors.index.json (the hub's naming)."""
    if shards == 1:
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        return
    names = list(state)
    per = math.ceil(len(names) / shards)
    weight_map = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n] for n in names[i * per:(i + 1) * per]}
        save_file(part, folder / fname, metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_checkpoint(
    folder: Path, *, text: dict | None = None, vision: dict | None = None, layout: str = "hub",
    shards: int = 1, seed: int = 0, state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """A complete tiny checkpoint folder, loadable by transformers and by glmv."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    config = _config_dict(tok, text or {}, vision or {}, layout)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_weights(folder, state if state is not None else random_state_dict(config, seed), shards)
    write_side_files(folder, tok, config)
    return folder
