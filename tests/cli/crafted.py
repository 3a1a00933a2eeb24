"""Tiny checkpoints whose greedy output is known in advance, to test the think / answer split, the
think budget, boxes and the display end to end through real processes.

Every decoder layer is made to add nothing to the residual stream (o_proj and down_proj are zero,
so attention and MLP outputs are zero and their post-norms keep them zero); the last hidden state
is then the normalised embedding of the current token alone. Each token of the script gets its own
embedding axis, and lm_head maps that axis to the next token of the script: greedy decoding walks
the script, whatever the prompt or the images (the prompt always ends with "<|assistant|>\\n").
Multi-word pieces are added to the tokenizer as single tokens (the config's vocabulary has room).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import AddedToken

from tests.reference import _config_dict, build_tokenizer, random_state_dict, save_weights, write_side_files

PROMPT_END = "\n"  # the last token of every generation prompt

# prompt end -> <think> ... </think><answer> ... </answer> <|endoftext|> (stop)
ANSWER_SCRIPT = ["<think>", "Let me look.", " I see a blue square.", "</think>", "<answer>",
                 "The blue square is at ", "<|begin_of_box|>", "[[120,250,500,750]]", "<|end_of_box|>",
                 "</answer>", "<|endoftext|>"]
THINKING = "Let me look. I see a blue square."
ANSWER = "The blue square is at [[120,250,500,750]]"
RAW = "".join(ANSWER_SCRIPT[:-1])

# an answer that never ends: "la la la ..." (for Ctrl-C)
LOOP_SCRIPT = ["<think>", "Let me look.", "</think>", "<answer>", "la", " la", " la"]


def write_crafted(folder: Path, script: list[str], *, seed: int = 0, text: dict | None = None) -> Path:
    """A checkpoint folder whose greedy continuation of any prompt is `script` (a repeated token
    closes a loop: the script continues from its first occurrence)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    pieces = [p for p in dict.fromkeys(script) if tok.token_to_id(p) is None]
    tok.add_tokens([AddedToken(p, normalized=False, special=False) for p in pieces])
    config = _config_dict(tok, text or {}, {}, "hub")
    assert tok.get_vocab_size() <= config["text_config"]["vocab_size"]
    state = random_state_dict(config, seed)
    ids = [tok.encode(PROMPT_END).ids[-1], *(tok.token_to_id(p) for p in script)]
    assert None not in ids, script
    _rewire(state, config, ids)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_weights(folder, state)
    write_side_files(folder, tok, config)
    return folder


@torch.no_grad()
def _rewire(state: dict, config: dict, ids: list[int]) -> None:
    text = config["text_config"]
    H = text["hidden_size"]
    for i in range(text["num_hidden_layers"]):
        state[f"model.language_model.layers.{i}.self_attn.o_proj.weight"].zero_()
        state[f"model.language_model.layers.{i}.mlp.down_proj.weight"].zero_()
    state["model.language_model.norm.weight"].fill_(1.0)
    embed, head = state["model.language_model.embed_tokens.weight"], state["lm_head.weight"]
    head.zero_()
    axis: dict[int, int] = {}
    for token in ids:
        axis.setdefault(token, len(axis))
    assert len(axis) <= H
    for token, k in axis.items():
        embed[token] = 0.0
        embed[token, k] = 1.0
    nxt: dict[int, int] = {}
    for cur, following in zip(ids[:-1], ids[1:], strict=True):
        if cur in nxt:
            break  # a loop: the rest repeats
        nxt[cur] = following
    for cur, following in nxt.items():
        head[following, axis[cur]] = 20.0
