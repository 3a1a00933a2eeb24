"""The last request's KV cache, kept for the next one: a prompt that begins the same way skips
what the cache already holds.

A chat's next turn repeats the whole conversation so far, images included, and a client of `glmv
serve` sends the same image again with each follow-up question. The keys and values of all that
are still in the cache the last request filled. `PromptCache.match` finds how many of the new
prompt's first tokens it holds; generation then runs only the rest through the decoder, and the
vision tower sees only the images and videos in the rest (Glm4v.prefill's `start`).

A match needs the same ids and, under image and video placeholders (the same ids for any two
images of one size), the same pixels: each image and video is compared by its grid and a digest
of its patch rows. A match never ends inside an image or a video: it stops before the first one
that differs or that the cached tokens end inside. At least the prompt's last token is run, for
the logits the answer starts from. The positions of the tokens kept are the new prompt's too
(M-RoPE positions depend only on the tokens before), and their keys and values are the ones a
full prefill computes.

What is kept: the per-layer caches and the ids whose keys and values are in them (the prompt,
then each generated token as it is fed back). After a failure nothing is kept. Each generation
marks the caches it writes with its prompt cache (`holder`), so caches that a generation without
this prompt cache wrote since (a decode step's cache is shared) are never matched.
GLMV_PROMPT_CACHE=0 turns the reuse off.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch

from glmv_cli.model.glm4v import grid_list
from glmv_cli.model.patch_codes import PatchCodes
from glmv_cli.model.positions import media_spans


def enabled() -> bool:
    return os.environ.get("GLMV_PROMPT_CACHE", "1") != "0"


@dataclass(frozen=True)
class Media:
    """One image (kind 1) or video (kind 2) of a prompt: its placeholder tokens [start, end), its
    grid(s) and a digest of its patch rows."""

    kind: int
    start: int
    end: int
    grid: tuple[int, int, int]
    digest: bytes


def prompt_media(inputs: dict, types: torch.Tensor) -> list[Media]:
    """The images and videos of a one-prompt batch (processor-style `inputs`; `types` (1, S) its
    token types), in prompt order."""
    grids = {1: grid_list(inputs.get("image_grid_thw")), 2: grid_list(inputs.get("video_grid_thw"))}
    pixels = {1: inputs.get("pixel_values"), 2: inputs.get("pixel_values_videos")}
    first_row = {kind: [0] for kind in grids}
    for kind, rows in first_row.items():
        for t, h, w in grids[kind]:
            rows.append(rows[-1] + t * h * w)
    out = []
    for kind, start, end, k in media_spans(types[0].tolist(), grids[1], grids[2]):
        rows = slice(first_row[kind][k], first_row[kind][k + 1])
        out.append(Media(kind, start, end, grids[kind][k], _digest(pixels[kind], rows)))
    return out


def _digest(pixels, rows: slice) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    if isinstance(pixels, PatchCodes):
        parts = [pixels.codes[rows], pixels.table, torch.tensor([pixels.temporal])]
    else:
        parts = [pixels[rows]]
    for t in parts:
        t = t.detach().contiguous().cpu()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()


class PromptCache:
    """The caches one request left and the ids in them; empty until a request fills it."""

    def __init__(self):
        self.caches: list | None = None
        self.ids: list[int] = []
        self.media: list[Media] = []

    @property
    def capacity(self) -> int:
        return self.caches[0].k.shape[2] if self.caches else 0

    def match(self, ids: list[int], media: list[Media]) -> int:
        """How many of the first tokens of the prompt `ids` (with its `media`) the cache holds."""
        if not self.caches or getattr(self.caches[0], "holder", None) is not self:
            return 0  # (another generation wrote into them since: a CUDA graph's cache is shared)
        n, limit = 0, min(len(self.ids), len(ids) - 1)
        while n < limit and self.ids[n] == ids[n]:
            n += 1
        old = iter(self.media)
        for item in media:
            if item.start >= n:
                break
            if next(old, None) != item or item.end > n:
                return item.start
        return n

    def hold(self, caches: list, ids: list[int], media: list[Media]) -> None:
        """The cache now holds the keys and values of `ids` (a copy is kept)."""
        self.caches, self.ids, self.media = caches, list(ids), list(media)

    def fed(self, token: int) -> None:
        """A generated token's keys and values went into the cache after the others."""
        self.ids.append(token)

    def copy_into(self, caches: list, n: int) -> None:
        """The first `n` positions of the kept cache into another (a bigger one for this request)."""
        for old, new in zip(self.caches, caches, strict=True):
            new.k[:, :, :n] = old.k[:, :, :n]
            new.v[:, :, :n] = old.v[:, :, :n]

    def clear(self) -> None:
        self.caches, self.ids, self.media = None, [], []
