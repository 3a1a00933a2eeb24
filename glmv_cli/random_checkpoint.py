"""Write a randomly initialised GLM-4.1V checkpoint in the real Hugging Face layout.

For tests, benchmarks and trying glmv without the 20 GB download: config.json (hub layout),
model.safetensors (or shards + index), a byte-level BPE tokenizer carrying the GLM special tokens,
the official chat template, preprocessor configs and generation_config.json. Weights are generated
and written one tensor at a time, so even the 9B shape needs little memory.

    python -m glmv_cli.random_checkpoint OUT_DIR --shape tiny|small|1b|9b [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from glmv_cli.safetensors_io import write_safetensors

GLM_SPECIAL_TOKENS = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
    "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
    "<|image|>", "<|video|>", "<think>", "</think>", "<answer>", "</answer>",
    "<|begin_of_box|>", "<|end_of_box|>",
]
CORPUS = [
    "Describe this image and this video. What is shown? 0 1 2 3 4 5 6 7 8 9 seconds",
    "The quick brown fox jumps over the lazy dog. How many shapes are in the image?",
    "What color is the circle? red green blue yellow purple orange square triangle",
    "Summarize the document. On which page is the blue square? At which second does it appear?",
]
CHAT_TEMPLATE = Path(__file__).with_name("chat_template.jinja")

# text / vision sizes per shape; vocab None = the tokenizer's size rounded up to 64
SHAPES = {
    "tiny": (dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, mrope_section=[2, 3, 3], max_position_embeddings=4096, vocab_size=None),
             dict(depth=2, hidden_size=64, num_heads=4, intermediate_size=96, image_size=112)),
    "small": (dict(hidden_size=768, intermediate_size=2560, num_hidden_layers=8, num_attention_heads=12,
                   num_key_value_heads=2, mrope_section=[4, 6, 6], max_position_embeddings=32768, vocab_size=32768),
              dict(depth=4, hidden_size=384, num_heads=6, intermediate_size=2560, image_size=336)),
    "1b": (dict(hidden_size=2048, intermediate_size=6848, num_hidden_layers=16, num_attention_heads=16,
                num_key_value_heads=2, mrope_section=[8, 12, 12], max_position_embeddings=65536, vocab_size=151552),
           dict(depth=8, hidden_size=768, num_heads=6, intermediate_size=6848, image_size=336)),
    "9b": (dict(hidden_size=4096, intermediate_size=13696, num_hidden_layers=40, num_attention_heads=32,
                num_key_value_heads=2, mrope_section=[8, 12, 12], max_position_embeddings=65536, vocab_size=151552),
           dict(depth=24, hidden_size=1536, num_heads=12, intermediate_size=13696, image_size=336)),
}


def build_tokenizer(vocab_size: int = 300):
    """Byte-level BPE (any text tokenizes) + the GLM special tokens, each one id, never split."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 10, trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in GLM_SPECIAL_TOKENS])
    return tok


def config_dict(tok, text: dict, vision: dict, layout: str = "hub") -> dict:
    """config.json as the hub writes it ("hub": legacy rope keys) or as transformers v5 saves it."""
    ids = {t: tok.token_to_id(t) for t in GLM_SPECIAL_TOKENS}
    t = dict(text)
    rope = {"rope_type": "default", "mrope_section": list(t.pop("mrope_section"))}
    vocab = t.pop("vocab_size", None) or 64 * math.ceil(tok.get_vocab_size() / 64)
    theta = float(t.pop("rope_theta", 10000.0))
    text_cfg = {
        "model_type": "glm4v_text", "vocab_size": vocab, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "attention_bias": True, "attention_dropout": 0.0, "initializer_range": 0.02, "tie_word_embeddings": False,
        "use_cache": True, "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]], **t,
    }
    if layout == "hub":
        text_cfg.update(rope_theta=theta, partial_rotary_factor=0.5, rope_scaling=rope)
    else:
        text_cfg["rope_parameters"] = {**rope, "rope_theta": theta, "partial_rotary_factor": 0.5}
    vision_cfg = {
        "model_type": "glm4v", "out_hidden_size": text_cfg["hidden_size"], "patch_size": 14,
        "temporal_patch_size": 2, "spatial_merge_size": 2, "in_channels": 3, "rms_norm_eps": 1e-5,
        "hidden_act": "silu", "attention_bias": False, "attention_dropout": 0.0, "initializer_range": 0.02,
        **vision,
    }
    return {
        "architectures": ["Glm4vForConditionalGeneration"], "model_type": "glm4v",
        "text_config": text_cfg, "vision_config": vision_cfg,
        "image_token_id": ids["<|image|>"], "video_token_id": ids["<|video|>"],
        "image_start_token_id": ids["<|begin_of_image|>"], "image_end_token_id": ids["<|end_of_image|>"],
        "video_start_token_id": ids["<|begin_of_video|>"], "video_end_token_id": ids["<|end_of_video|>"],
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }


def tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every checkpoint key and its shape, from our model built on the meta device."""
    from glmv_cli.model.config import Glm4vConfig
    from glmv_cli.model.glm4v import Glm4v

    with torch.device("meta"):
        model = Glm4v(Glm4vConfig.from_dict(config))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Norm weights near 1, biases near 0, matrices N(0, 0.02); drawn on the generator's device
    (10 B normal draws take minutes on a CPU, a second on a GPU), returned on the CPU."""
    draw = torch.randn(shape, generator=gen, device=gen.device)
    if len(shape) == 1:
        base = 1.0 if "norm" in name else 0.0
        return (base + 0.05 * draw).to(dtype).cpu()
    return (0.02 * draw).to(dtype).cpu()


def write_side_files(folder: Path, tok, config: dict, *, image_pixels: tuple[int, int] = (12544, 9633792),
                     video_pixels: tuple[int, int] = (12544, 47040000), max_new_tokens: int | None = None) -> None:
    """Tokenizer, chat template, preprocessor and generation configs. Pixel limits are (min, max)
    as the processor counts them (GLM-4.1V's own by default)."""
    tok.save(str(folder / "tokenizer.json"))
    tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>", "padding_side": "left", "clean_up_tokenization_spaces": False,
               "model_max_length": config["text_config"]["max_position_embeddings"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE.read_text())
    image = {"size": {"shortest_edge": image_pixels[0], "longest_edge": image_pixels[1]}, "do_rescale": True,
             "patch_size": 14,
             "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
             "image_std": [0.26862954, 0.26130258, 0.27577711], "image_processor_type": "Glm4vImageProcessor",
             "processor_class": "Glm4vProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(image, indent=2))
    video = {k: v for k, v in image.items() if k != "image_processor_type"}
    video.update(size={"shortest_edge": video_pixels[0], "longest_edge": video_pixels[1]},
                 video_processor_type="Glm4vVideoProcessor")
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    gen = {"do_sample": False, "eos_token_id": config["text_config"]["eos_token_id"],
           "pad_token_id": config["text_config"]["pad_token_id"]}
    if max_new_tokens:
        gen["max_new_tokens"] = max_new_tokens
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2))


def write_random_checkpoint(folder: Path, shape: str = "tiny", *, dtype: torch.dtype = torch.bfloat16,
                            seed: int = 0, shard_bytes: int = 5 * 2**30, device: str = "cpu") -> Path:
    """`device`: where the weights are drawn ("cuda" for the large shapes; other draws than the CPU's)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    text, vision = SHAPES[shape]
    config = config_dict(tok, text, vision)
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    gen = torch.Generator(device=device).manual_seed(seed)
    shapes = tensor_shapes(config)
    fill = lambda name: random_tensor(name, shapes[name], dtype, gen)  # noqa: E731
    write_safetensors(folder, {k: (s, dtype) for k, s in shapes.items()}, fill, shard_bytes=shard_bytes)
    write_side_files(folder, tok, config)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", choices=list(SHAPES), default="tiny")
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="where to draw the weights (cuda: much faster for 9b)")
    args = ap.parse_args()
    write_random_checkpoint(args.out, args.shape, dtype=getattr(torch, args.dtype), seed=args.seed,
                            device=args.device)
    print(args.out)


if __name__ == "__main__":
    main()
