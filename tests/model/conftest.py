"""Tiny checkpoints and reference-processed prompts shared by the model tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.reference import reference_model, reference_processor, write_checkpoint

# (name, text overrides, vision overrides, config layout): head counts, kv heads, mrope sections, depths
VARIANTS = {
    "base": ({}, {}, "hub"),
    "mha_deep": (dict(num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=3,
                      mrope_section=[4, 6, 6], rope_theta=100.0), dict(depth=3, num_heads=2), "rope_parameters"),
    "gqa4": (dict(hidden_size=192, num_attention_heads=6, num_key_value_heads=2, intermediate_size=320,
                  mrope_section=[2, 3, 3], rope_theta=500.0), dict(hidden_size=96, num_heads=6, image_size=84), "hub"),
    "mqa": (dict(num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=1,
                 mrope_section=[4, 2, 2]), dict(depth=1, num_heads=2, intermediate_size=64), "rope_parameters"),
}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """name -> folder, written lazily and cached for the session."""
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            text, vision, layout = VARIANTS[name]
            folder = tmp_path_factory.mktemp(name)
            cache[name] = write_checkpoint(folder, text=text, vision=vision, layout=layout, seed=len(cache))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def tiny_folder(checkpoints):
    return checkpoints("base")


@pytest.fixture(scope="session")
def reference(tiny_folder):
    return reference_model(tiny_folder)


@pytest.fixture(scope="session")
def processor(tiny_folder):
    return reference_processor(tiny_folder)


def random_image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def random_video(frames: int, h: int, w: int, fps: float, seed: int = 0):
    from transformers.video_utils import VideoMetadata

    video = np.random.default_rng(seed).integers(0, 256, (frames, h, w, 3), dtype=np.uint8)
    meta = VideoMetadata(total_num_frames=frames, fps=fps, width=w, height=h, duration=frames / fps)
    return video, meta


# prompt name -> (images as (h, w), video as (frames, h, w, fps) or None, text)
PROMPTS = {
    "text": ([], None, "Write a haiku about the sea."),
    "image": ([(112, 168)], None, "Describe this."),
    "images": ([(112, 168), (60, 90), (200, 140)], None, "Compare these images."),
    "wide": ([(28, 1500)], None, "Read the banner."),
    "video": ([], (8, 84, 112, 4.0), "What happens?"),
    "mixed": ([(56, 84), (90, 60)], (6, 56, 84, 2.0), "Is the image in the video?"),
}


def make_inputs(processor, name: str) -> dict:
    """The reference processor's tensors for one named prompt (images first, then the video)."""
    images, video, text = PROMPTS[name]
    content = [{"type": "image"} for _ in images] + ([{"type": "video"}] if video else [])
    messages = [{"role": "user", "content": content + [{"type": "text", "text": text}]}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    kwargs = {}
    if images:
        kwargs["images"] = [random_image(h, w, seed=i) for i, (h, w) in enumerate(images)]
    if video:
        frames, h, w, fps = video
        clip, meta = random_video(frames, h, w, fps, seed=7)
        kwargs.update(videos=[clip], video_metadata=[meta])
    inputs = processor(text=[prompt], return_tensors="pt", **kwargs)
    inputs.pop("video_metadata", None)
    return dict(inputs)


@pytest.fixture(scope="session")
def prompt_inputs(processor):
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = make_inputs(processor, name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def follow_up(processor):
    """A next turn's tokens after a prompt: an answer, the next question, the assistant tag."""
    text = "It is a picture.<|user|>\nAnd what else is there?<|assistant|>\n"
    return torch.tensor([processor.tokenizer(text)["input_ids"]])


def extended(inputs: dict, more: torch.Tensor) -> dict:
    out = dict(inputs)
    out["input_ids"] = torch.cat([inputs["input_ids"], more], dim=1)
    if "attention_mask" in inputs:
        out["attention_mask"] = torch.ones_like(out["input_ids"])
    return out


@pytest.fixture(scope="module")
def glm(tiny_folder):
    """The tiny checkpoint loaded by glmv in float32, once per test module."""
    import glmv_cli

    return glmv_cli.load(tiny_folder, device="cpu", dtype="float32")


def model_kwargs(inputs: dict) -> dict:
    """What a caller passes to our model: the processor's tensors minus mm_token_type_ids
    (our model derives the token types from the ids)."""
    return {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}


def agreement(exact, quantized, prompt_inputs, prompts=("text", "image", "video")) -> tuple[float, float]:
    """(share of positions whose greedy token agrees, least logit cosine) of two loaded models
    (glmv_cli.load's) over the prompts: what quantization keeps of the unquantized model."""
    import torch.nn.functional as F

    agree = total = 0
    least = 1.0
    for name in prompts:
        inputs = model_kwargs(prompt_inputs(name))
        a, b = exact.model(**inputs)[0], quantized.model(**inputs)[0]  # (S, V)
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += a.shape[0]
        least = min(least, float(F.cosine_similarity(a.float(), b.float(), dim=-1).min()))
    return agree / total, least


torch.manual_seed(0)
