"""The demo checkpoint's definition: GLM-4.1V's exact architecture, scaled down to the demo tasks.

Everything but the weights is written here, in the real Hugging Face layout, so that the training
data can be prepared by the same loaders and prompt builder that serve `glmv ask` (they read the
tokenizer, chat template and preprocessor settings from the folder):
  * config.json: text decoder hidden 256, 4 layers, 4 heads / 2 KV heads, partial M-RoPE as the
    real model ([4, 6, 6] of a 64-wide head); vision tower hidden 192 (MLP 576), depth 4, 14-px
    patches, 2x2 merge, temporal patch 2; 5.58 M parameters in all (22 MB in float32);
  * a byte-level BPE tokenizer trained on the tasks' own text (digits kept one per token, so
    numbers are spelled the same way in pictures, timestamps and answers) plus every GLM special
    token; the official chat template;
  * the real preprocessor rule with smaller pixel limits: an image is resized to between
    168 x 168 and 224 x 224 px of area (36-64 tokens), a video's frames share 230,000 px (~12
    tokens per frame pair for a 12 s clip at 2 fps).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from glmv_cli.demo import tasks
from glmv_cli.random_checkpoint import GLM_SPECIAL_TOKENS, config_dict, write_side_files

TEXT = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, mrope_section=[4, 6, 6], max_position_embeddings=2048, vocab_size=None)
VISION = dict(depth=4, hidden_size=192, num_heads=4, intermediate_size=576, image_size=224)
IMAGE_PIXELS = (2 * 168 * 168, 2 * 224 * 224)  # (min, max) as the processor counts them: 2 frames per image;
# small images are enlarged so that a shape of 10% of the shorter side still spans a 14-px patch
VIDEO_PIXELS = (2 * 56 * 56, 230_000)
BPE_VOCAB = 448  # 256 byte tokens + merges; + the special tokens, rounded up to 512 in the embedding
MAX_NEW_TOKENS = 256  # the demo's answers are short; a default that keeps a confused model brief


def corpus(samples: int = 3000, seed: int = 0, thinking: str = "listing") -> list[str]:
    """Text the tokenizer is trained on: the template's words, every question and thinking form
    (in a tasks.THINKING style)."""
    rng = random.Random(f"corpus-{seed}")
    lines = ["Describe this image. Summarize this document. Describe this video. What is shown?",
             "Page 1: Page 2: 0 1 2 3 4 5 6 7 8 9 seconds"]
    for _ in range(samples):
        task = rng.choice(("shapes", "numbers"))
        example = tasks.make_example(task, rng, Path("."), 0, thinking)
        lines += [example.question, example.target]
    for _ in range(samples // 4):
        names = [tasks.Shape(rng.choice(tasks.SHAPES), rng.choice(list(tasks.COLORS)), (0, 0, 0, 0)).a_name
                 for _ in range(rng.randint(2, 8))]
        if thinking != "listing":  # the concluding style needs the blue square among the pages
            names[rng.randrange(len(names))] = "a blue square"
        lines.append(tasks.pdf_thinking(names, thinking))
        kind, color = rng.choice(tasks.SHAPES), rng.choice(list(tasks.COLORS))
        lines += [tasks.video_question(kind, color), tasks.video_thinking(kind, color, rng.randint(1, 11))]
    return lines


def build_tokenizer(seed: int = 0, thinking: str = "listing"):
    """Byte-level BPE over the task text, digits split one per token, with the GLM special tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(seed=seed, thinking=thinking), trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in GLM_SPECIAL_TOKENS])
    return tok


def write_spec(folder: Path, seed: int = 0, thinking: str = "listing") -> dict:
    """config.json, tokenizer, template, preprocessor and generation configs (no weights) -> config."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(seed, thinking)
    config = config_dict(tok, TEXT, VISION)
    config["torch_dtype"] = "float32"
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_side_files(folder, tok, config, image_pixels=IMAGE_PIXELS, video_pixels=VIDEO_PIXELS,
                     max_new_tokens=MAX_NEW_TOKENS)
    return config
