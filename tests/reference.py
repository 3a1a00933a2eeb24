"""Tiny random GLM-4.1V checkpoints in the real Hugging Face layout, and the transformers reference.

`write_checkpoint(folder, ...)` writes what a hub checkpoint folder holds: config.json (hub layout
with legacy `rope_scaling` + `partial_rotary_factor`, or the newer `rope_parameters`), weights as
model.safetensors or shards + model.safetensors.index.json, tokenizer.json / tokenizer_config.json
with the GLM special tokens, the official chat_template.jinja, preprocessor_config.json,
video_preprocessor_config.json and generation_config.json. The weights come from transformers'
own `Glm4vForConditionalGeneration` (seeded, then perturbed so that no norm is exactly one and no
bias exactly zero), so both implementations load the same files.

`reference_processor(folder)` builds the real `Glm4vProcessor` (PIL image backend; the video
processor with a plain-torch stand-in for its three torchvision calls, as in
shared/reference/tiny_glm4v_reference.py, since no CPU torchvision exists).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from glmv_cli.random_checkpoint import (  # noqa: F401  (re-exported for the tests)
    CHAT_TEMPLATE,
    GLM_SPECIAL_TOKENS,
    SHAPES,
    build_tokenizer,
    config_dict,
    write_side_files,
)

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


def reference_model(folder: Path, attn: str = "sdpa"):
    """transformers' Glm4vForConditionalGeneration loaded from the folder, float32, eval."""
    from transformers import Glm4vForConditionalGeneration

    model = Glm4vForConditionalGeneration.from_pretrained(str(folder), attn_implementation=attn,
                                                          dtype=torch.float32)
    return model.eval()


def reference_processor(folder: Path):
    """The real Glm4vProcessor over the folder's tokenizer and preprocessor configs."""
    import transformers.processing_utils as pu
    from transformers import Glm4vImageProcessorPil, Glm4vProcessor, PreTrainedTokenizerFast
    from transformers.models.glm4v.video_processing_glm4v import Glm4vVideoProcessor, smart_resize
    from transformers.video_processing_utils import VideoProcessorMixin

    # Without torchvision, transformers does not export VideoProcessorMixin, which ProcessorMixin
    # looks up on its own handle of the lazy module.
    if not hasattr(pu.transformers_module, "VideoProcessorMixin"):
        setattr(pu.transformers_module, "VideoProcessorMixin", VideoProcessorMixin)

    class CpuVideoProcessor(Glm4vVideoProcessor):
        """Glm4vVideoProcessor with plain-torch stand-ins for its three torchvision calls."""

        def convert_to_rgb(self, video):
            if video.shape[-3] == 1:
                video = video.expand(*video.shape[:-3], 3, *video.shape[-2:])
            return video

        def resize(self, videos, size, resample, factor, temporal_factor, **kwargs):
            h, w = videos.shape[-2:]
            rh, rw = smart_resize(num_frames=videos.shape[1], height=h, width=w, factor=factor,
                                  temporal_factor=temporal_factor, min_pixels=size.shortest_edge,
                                  max_pixels=size.longest_edge)
            x = videos.reshape(-1, *videos.shape[-3:]).to(torch.float32)
            x = F.interpolate(x, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True)
            if videos.dtype == torch.uint8:
                x = x.clamp_(0, 255).round_()
            return x.to(videos.dtype).reshape(*videos.shape[:-2], rh, rw)

        def normalize(self, image, mean, std, inplace=False, **kwargs):
            mean = torch.as_tensor(mean, dtype=image.dtype).view(-1, 1, 1)
            std = torch.as_tensor(std, dtype=image.dtype).view(-1, 1, 1)
            return (image - mean) / std

    folder = Path(folder)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    proc_cfg = json.loads((folder / "preprocessor_config.json").read_text())
    video_cfg = json.loads((folder / "video_preprocessor_config.json").read_text())
    keep = ("size", "patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std")
    image_processor = Glm4vImageProcessorPil(**{k: proc_cfg[k] for k in keep})
    video_processor = CpuVideoProcessor(**{k: video_cfg[k] for k in keep})
    return Glm4vProcessor(image_processor=image_processor, tokenizer=tokenizer,
                          video_processor=video_processor, chat_template=CHAT_TEMPLATE.read_text())


@torch.no_grad()
def building_block_logits(model, inputs) -> torch.Tensor:
    """Reference logits for any prompt, mixed images + video included: transformers' own pieces,
    with image features scattered where mm_token_type_ids == 1 and video features where == 2
    (its model(**inputs) refuses the mix because frames reuse <|image|>)."""
    m = model.model
    ids, tt = inputs["input_ids"], inputs["mm_token_type_ids"]
    embeds = m.get_input_embeddings()(ids)
    if inputs.get("pixel_values") is not None:
        img = torch.cat(m.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output)
        embeds = embeds.masked_scatter((tt == 1).unsqueeze(-1), img.to(embeds.dtype))
    if inputs.get("pixel_values_videos") is not None:
        vid = torch.cat(m.get_video_features(inputs["pixel_values_videos"],
                                             inputs["video_grid_thw"]).pooler_output)
        embeds = embeds.masked_scatter((tt == 2).unsqueeze(-1), vid.to(embeds.dtype))
    pos, _ = m.get_rope_index(ids, tt, inputs.get("image_grid_thw"), inputs.get("video_grid_thw"),
                              inputs["attention_mask"])
    hidden = m.language_model(inputs_embeds=embeds, position_ids=pos, attention_mask=inputs["attention_mask"],
                              use_cache=False).last_hidden_state
    return model.lm_head(hidden)
