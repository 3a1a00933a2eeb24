"""What reading a prompt costs, in estimated floating-point operations: so that a long prefill can
say how far it has come (Glm4v.prefill's `progress`).

A 12-megapixel photo is 22,016 patches for the vision tower and 5,504 tokens for the decoder:
GLM-4.1V-9B then does ~100 TFLOP in the tower (70 of them attention: every patch of an image
attends to every other) and ~100 in the decoder, minutes on a CPU. Counted: products with the
weights (2 a weight and a row) and attention (4 a query-key pair and a channel of the heads);
norms, rotary and the rest are left out. An attention operation counts as ATTENTION of a product's
with the weights: it runs at about half their pace (on a 2-core CPU, the `1b` shape's tower over a
2400x1800 image, 83% attention, took 60-68% of the prefill's time in three runs: 57% of the
operations, 67% counted so).
"""

from __future__ import annotations

from glmv_cli.model.config import Glm4vConfig, TextConfig, VisionConfig

Grids = list[tuple[int, int, int]]
ATTENTION = 2.0


def vision_block_work(cfg: VisionConfig, grids: Grids) -> float:
    """One vision block over these grids: qkv and proj (4 C^2), the SwiGLU MLP (3 C x out_hidden),
    attention within each temporal slice (h*w patches each, bidirectional)."""
    C = cfg.hidden_size
    patches = sum(t * h * w for t, h, w in grids)
    pairs = sum(t * (h * w) ** 2 for t, h, w in grids)
    return 2.0 * patches * (4 * C * C + 3 * C * cfg.out_hidden_size) + ATTENTION * 4 * C * pairs


def merger_work(cfg: VisionConfig, grids: Grids) -> float:
    """The downsampling convolution and the patch merger over the merged tokens of these grids."""
    D, m = cfg.out_hidden_size, cfg.spatial_merge_size
    tokens = sum(t * h * w for t, h, w in grids) // (m * m)
    return 2.0 * tokens * (cfg.hidden_size * m * m * D + D * D + 3 * D * cfg.intermediate_size)


def vision_work(cfg: VisionConfig, grids: Grids) -> float:
    """The whole tower over these grids (the blocks' work adds up over groups of grids)."""
    return cfg.depth * vision_block_work(cfg, grids) + merger_work(cfg, grids) if grids else 0.0


def text_layer_work(cfg: TextConfig, tokens: int, before: int) -> float:
    """One decoder layer over `tokens` new tokens after `before` cached ones (causal attention)."""
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    weights = cfg.hidden_size * (2 * q + 2 * kv) + 3 * cfg.hidden_size * cfg.intermediate_size
    pairs = tokens * before + tokens * (tokens + 1) / 2
    return 2.0 * tokens * weights + ATTENTION * 4 * q * pairs


def prefill_work(cfg: Glm4vConfig, grids: Grids, length: int, start: int, chunk: int) -> float:
    """A prompt's `length` tokens after `start` cached ones, `chunk` at a time, with the images and
    video frames of `grids` (those in the part that is run)."""
    text = sum(text_layer_work(cfg.text, min(chunk, length - at), start + at) for at in range(0, length, chunk))
    return vision_work(cfg.vision, grids) + cfg.text.num_layers * text


class Tally:
    """Adds up the work done, piece by piece, and tells `progress` (done, total) after each (a
    prefill's operations here, loading.py's bytes)."""

    def __init__(self, progress, total: float):
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, amount: float) -> None:
        self.done = min(self.done + amount, self.total)
        self.progress(self.done, self.total)

    def end(self) -> None:
        """Say the whole is done (the pieces' sum may round below it)."""
        if self.done < self.total:
            self.done = self.total
            self.progress(self.total, self.total)
