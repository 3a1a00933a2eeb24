"""transformers' GLM-4.1V as the numerical reference: its model, its real Glm4vProcessor, and a
forward built from its own pieces that also accepts prompts mixing images and a video.

Used by the parity tests and by `glmv bench`; needs the test extra (`pip install transformers`).
transformers is imported lazily, inside each function.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from glmv_cli.random_checkpoint import CHAT_TEMPLATE


def reference_model(folder: Path, attn: str = "sdpa", dtype: torch.dtype = torch.float32, device=None):
    """transformers' Glm4vForConditionalGeneration loaded from the folder, eval; `device` loads
    it there directly (its own fastest path, device_map), else on the CPU."""
    from transformers import Glm4vForConditionalGeneration

    kwargs = {"device_map": str(device)} if device is not None and torch.device(device).type != "cpu" else {}
    model = Glm4vForConditionalGeneration.from_pretrained(str(folder), attn_implementation=attn, dtype=dtype,
                                                          **kwargs)
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
