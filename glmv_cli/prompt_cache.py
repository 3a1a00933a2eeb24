"""The last request's KV cache, kept for the next one: a prompt that begins the same way skips
what the cache already holds.

A chat's next turn repeats the whole conversation so far, images included, and a client of `glmv
serve` sends the same image again with each follow-up question. The keys and values of all that
are still in the cache the last request filled. `PromptCache.find` finds how many of the new
prompt's first tokens it holds; generation then runs only the rest through the decoder, and the
vision tower sees only the images and videos in the rest (Glm4v.prefill's `start`).

A match needs the same ids and, under image and video placeholders (the same ids for any two
images of one size), the same pixels: each image and video is compared by its grid and a digest
of its patch rows. A match never ends inside an image or a video: it stops before the first one
that differs or that the cached tokens end inside. At least the prompt's last token is run, for
the logits the answer starts from. The positions of the tokens kept are the new prompt's too
(M-RoPE positions depend only on the tokens before), and their keys and values are the ones a
full prefill computes.

What is kept: the working cache (the last request's, with the ids in it: the prompt, then each
generated token as it is fed back) and snapshots of a few earlier prompts, so that a request
between two turns of a chat does not cost the chat its cache (PromptCache). After a failure nothing
is kept. Each generation marks the cache it writes with its prompt cache (`holder`): a cache that
a generation without this prompt cache wrote into since (a decode step's cache is shared) is never
matched. GLMV_PROMPT_CACHE=0 turns the reuse off.
"""

from __future__ import annotations

import hashlib
import os
import threading
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


@dataclass
class Snapshot:
    """An earlier prompt set aside: its ids, media and per-layer (keys, values) of exactly its length."""

    ids: list[int]
    media: list[Media]
    kv: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.kv)


@dataclass(frozen=True)
class Found:
    """The longest match for a prompt: `n` tokens, in the working cache (source None) or a snapshot."""

    n: int
    source: Snapshot | None
    working: int  # of those, how many the working cache holds


def matched(held_ids: list[int], held_media: list[Media], ids: list[int], media: list[Media]) -> int:
    """How many of the first tokens of `ids` (with its `media`) a cache holding `held_ids` has: the
    same ids, the same pixels under placeholders, not ending inside an image or a video, and at
    least the prompt's last token left to run."""
    n, limit = 0, min(len(held_ids), len(ids) - 1)
    while n < limit and held_ids[n] == ids[n]:
        n += 1
    old = iter(held_media)
    for item in media:
        if item.start >= n:
            break
        if next(old, None) != item or item.end > n:
            return item.start
    return n


def _begins_with(ids: list[int], media: list[Media], snap: Snapshot) -> bool:
    """Whether a prompt begins with all of a snapshot's tokens (the same pixels too)."""
    return matched(ids, media, snap.ids + [-1], snap.media) == len(snap.ids)


class PromptCache:
    """The working cache (the one the last request filled, the ids in it) and snapshots of earlier
    prompts; empty until a request fills it.

    A snapshot is taken when a request is about to overwrite a prompt it does not continue: a
    client's unrelated request (a chat interface asking for a title) between two turns of a chat, or
    a second chat, then costs the first chat nothing. At most `slots` snapshots (GLMV_PROMPT_CACHE_SLOTS,
    default 4) within `budget` bytes (GLMV_PROMPT_CACHE_MB, default 1024; also at most a quarter of
    the free memory of its device, the host's on a CPU); the least recently used go first."""

    MIN_TOKENS = 16  # shorter prompts are not worth a slot

    def __init__(self, slots: int | None = None, budget: int | None = None):
        self.caches: list | None = None
        self.ids: list[int] = []
        self.media: list[Media] = []
        self.prompt_len = 0  # of ids, the prompt's (the rest were generated)
        self.snapshots: list[Snapshot] = []  # most recently used first
        self.slots = int(os.environ.get("GLMV_PROMPT_CACHE_SLOTS", 4)) if slots is None else slots
        self.budget = int(float(os.environ.get("GLMV_PROMPT_CACHE_MB", 1024)) * 2**20) if budget is None else budget
        self._lock = threading.Lock()  # (a generation decoding beside others feeds ids while another holds)

    @property
    def capacity(self) -> int:
        return self.caches[0].k.shape[2] if self.caches else 0

    def has_working(self) -> bool:
        # (another generation may have written into a shared cache since: a CUDA graph's)
        return bool(self.caches) and getattr(self.caches[0], "holder", None) is self

    def find(self, ids: list[int], media: list[Media]) -> Found:
        """The longest match for the prompt `ids` with its `media`."""
        working = matched(self.ids, self.media, ids, media) if self.has_working() else 0
        best = Found(working, None, working)
        for snap in self.snapshots:
            n = matched(snap.ids, snap.media, ids, media)
            if n > best.n:
                best = Found(n, snap, working)
        return best

    def match(self, ids: list[int], media: list[Media]) -> int:
        """How many of the first tokens of the prompt `ids` (with its `media`) are held."""
        return self.find(ids, media).n

    def set_aside(self, found: Found) -> None:
        """Before a request writes into the working cache: a snapshot of the prompt there when the
        request does not continue it (it would be lost). A snapshot the request starts from goes
        back into the working cache, so it is no longer kept apart."""
        if found.source is not None:
            self.snapshots.remove(found.source)
        n = self.prompt_len
        if not self.has_working() or n < self.MIN_TOKENS or found.working >= n - 1:
            return
        ids, media = self.ids[:n], self.media
        self.snapshots = [s for s in self.snapshots if not _begins_with(ids, media, s)]  # it says more
        budget = self._budget()
        if n * self.bytes_per_token() > budget:
            return
        try:
            kv = [(c.k[:, :, :n].clone(), c.v[:, :, :n].clone()) for c in self.caches]
        except RuntimeError:  # (out of memory: no snapshot)
            return
        self.snapshots.insert(0, Snapshot(ids, media, kv))
        while self.snapshots and (len(self.snapshots) > self.slots
                                  or sum(s.nbytes for s in self.snapshots) > budget):
            self.snapshots.pop()

    def bytes_per_token(self) -> int:
        """Of the working cache: keys and values of one position in every layer."""
        return sum(c.k[:, :, :1].nbytes + c.v[:, :, :1].nbytes for c in self.caches)

    def _budget(self) -> int:
        from glmv_cli.memory import device_room

        room = device_room(self.caches[0].k.device)  # the GPU's free memory, or the host's on a CPU
        return min(self.budget, room.free // 4) if room else self.budget

    def hold(self, caches: list, ids: list[int], media: list[Media]) -> None:
        """The working cache now holds the keys and values of the prompt `ids` (a copy is kept) and
        of those of its `media` that end within them."""
        with self._lock:
            self.caches, self.ids, self.media = caches, list(ids), [m for m in media if m.end <= len(ids)]
            self.prompt_len = len(ids)

    def fed(self, token: int, caches: list | None = None) -> None:
        """A generated token's keys and values went into the working cache after the others (into
        `caches`, when given: nothing happens unless that is still the working cache, since a
        generation decoding beside others may have handed the working cache on)."""
        with self._lock:
            if caches is None or caches is self.caches:
                self.ids.append(token)

    def copy_into(self, caches: list, found: Found) -> None:
        """The first `found.n` positions of what matched into `caches` (this request's cache)."""
        n = found.n
        source = found.source.kv if found.source is not None else [(c.k, c.v) for c in self.caches]
        for (k, v), new in zip(source, caches, strict=True):
            new.k[:, :, :n] = k[:, :, :n]
            new.v[:, :, :n] = v[:, :, :n]

    def drop_working(self) -> None:
        with self._lock:
            self.caches, self.ids, self.media, self.prompt_len = None, [], [], 0

    def clear(self) -> None:
        """Nothing kept (after a failure: the memory goes back)."""
        self.drop_working()
        self.snapshots = []
