"""GLM-4.1V: vision tower + GLM decoder, with the checkpoint's module names.

`Glm4v.forward` takes the tensors transformers' Glm4vProcessor produces, by the same names, and
returns logits. Image features fill the `<|image|>` placeholders of images (type 1) and video
features the placeholders inside `<|begin_of_video|>..<|end_of_video|>` (type 2, video frames reuse
the image token), so prompts that mix images and videos work too.

For generation, `prefill` runs the prompt into the preallocated KV cache and returns the last
logits and the rope delta; `decode` runs new tokens at positions `text position + delta`.

The model's boundary is `on_model_device`: whatever tensors a caller passes (on the CPU, as the
prompt builder makes them, or anywhere else) are moved there, once, to the model's device; token
types and 3D positions are computed on the CPU (a Python loop over runs) and moved with them.
"""

from __future__ import annotations

import torch
from torch import nn

from glmv_cli.model import work
from glmv_cli.model.config import Glm4vConfig
from glmv_cli.model.positions import media_spans, mm_token_types, rope_positions
from glmv_cli.model.text import TextModel, padded_causal_mask
from glmv_cli.model.vision import VisionModel


class Glm4vBody(nn.Module):
    """The `model.` prefix of the checkpoint: `model.visual` and `model.language_model`."""

    def __init__(self, cfg: Glm4vConfig):
        super().__init__()
        self.visual = VisionModel(cfg.vision)
        self.language_model = TextModel(cfg.text)


class Glm4v(nn.Module):
    def __init__(self, cfg: Glm4vConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Glm4vBody(cfg)
        self.lm_head = nn.Linear(cfg.text.hidden_size, cfg.text.vocab_size, bias=False)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def visual(self) -> VisionModel:
        return self.model.visual

    @property
    def language_model(self) -> TextModel:
        return self.model.language_model

    def token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return mm_token_types(input_ids, c.image_token_id, c.video_start_token_id, c.video_end_token_id)

    def embed(self, input_ids: torch.Tensor, types: torch.Tensor, pixel_values=None, image_grid_thw=None,
              pixel_values_videos=None, video_grid_thw=None, pause=None, tick=None) -> torch.Tensor:
        """Token embeddings (B, S, hidden) with vision features scattered into the placeholders
        (`pause`: called between the vision tower's groups of patches, and between images and video;
        `tick`: told the work of each vision block done, see work.py)."""
        embeds = self.language_model.embed_tokens(input_ids)
        for kind, pixels, grids in ((1, pixel_values, image_grid_thw), (2, pixel_values_videos, video_grid_thw)):
            slots = types == kind
            n_slots = int(slots.sum())
            if pixels is None:
                if n_slots:
                    raise ValueError(f"the prompt has {n_slots} {_NAMES[kind]} placeholders but no pixels")
                continue
            if kind == 2 and pause is not None and pixel_values is not None:
                pause()
            features = self.visual(pixels.to(embeds.device), grids, pause, tick)  # (PatchCodes are expanded there)
            if features.shape[0] != n_slots:
                raise ValueError(f"{_NAMES[kind]} features ({features.shape[0]}) and placeholders ({n_slots}) "
                                 f"do not match")
            embeds = embeds.masked_scatter(slots[..., None], features.to(embeds.dtype))
        return embeds

    def positions(self, types: torch.Tensor, image_grid_thw=None, video_grid_thw=None,
                  attention_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """3D positions (3, B, S) and rope deltas (B, 1) for a prompt."""
        grids = [grid_list(image_grid_thw), grid_list(video_grid_thw)]
        return rope_positions(types, *grids, self.cfg.vision.spatial_merge_size, attention_mask)

    def forward(self, input_ids: torch.Tensor, pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
                video_grid_thw=None, attention_mask=None, mm_token_type_ids=None, **_unused) -> torch.Tensor:
        """Full forward without cache: logits (B, S, vocab) in float32. Differentiable (training);
        loaded models have requires_grad off, so inference builds no graph."""
        types = mm_token_type_ids.cpu() if mm_token_type_ids is not None else self.token_types(input_ids.cpu())
        position_ids, _ = self.positions(types, image_grid_thw, video_grid_thw, attention_mask)
        x = on_model_device(self.device, input_ids=input_ids, types=types, position_ids=position_ids,
                            attention_mask=attention_mask, pixel_values=pixel_values,
                            pixel_values_videos=pixel_values_videos)
        embeds = self.embed(x["input_ids"], x["types"], x["pixel_values"], image_grid_thw, x["pixel_values_videos"],
                            video_grid_thw)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = padded_causal_mask(x["attention_mask"])
        hidden = self.language_model(embeds, x["position_ids"], mask=mask)
        return self.lm_head(hidden).float()

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, pixel_values=None, image_grid_thw=None, pixel_values_videos=None,
                video_grid_thw=None, mm_token_type_ids=None, start: int = 0, chunk: int | None = None,
                pause=None, progress=None, **_unused) -> tuple[torch.Tensor, int]:
        """One unpadded prompt (1, S) into the KV cache -> (last logits (1, vocab), rope delta).

        start > 0: the cache already holds the keys and values of the prompt's first `start`
        tokens (an earlier request's, see prompt_cache.py); only the rest is run, and the vision
        tower sees only the images and videos in it. `start` must not cut an image or a video.
        The decoder takes the prompt `chunk` tokens at a time (default PREFILL_CHUNK); `pause`
        (optional) is called between chunks (batching.py: other requests' tokens meanwhile).
        `progress` (optional) is called as progress(done, total) after each vision block and each
        decoder layer of each chunk: the estimated work done of the whole (work.py), ending at total."""
        types = mm_token_type_ids.cpu() if mm_token_type_ids is not None else self.token_types(input_ids.cpu())
        position_ids, deltas = self.positions(types, image_grid_thw, video_grid_thw)
        if start:
            pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw = self._media_after(
                start, types, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)
            input_ids, types, position_ids = input_ids[:, start:], types[:, start:], position_ids[:, :, start:]
        x = on_model_device(self.device, input_ids=input_ids, types=types, position_ids=position_ids,
                            pixel_values=pixel_values, pixel_values_videos=pixel_values_videos)
        length, chunk = input_ids.shape[1], chunk or PREFILL_CHUNK
        tick = None
        if progress is not None:
            grids = grid_list(image_grid_thw) + grid_list(video_grid_thw)
            tick = work.Tally(progress, work.prefill_work(self.cfg, grids, length, start, chunk))
        embeds = self.embed(x["input_ids"], x["types"], x["pixel_values"], image_grid_thw, x["pixel_values_videos"],
                            video_grid_thw, pause, tick)
        for at in range(0, length, chunk):  # each chunk attends to the cache before it
            if at and pause is not None:
                pause()
            end = min(at + chunk, length)
            hidden = self.language_model(embeds[:, at:end], x["position_ids"][:, :, at:end], start=start + at,
                                         use_cache=True, tick=tick)
        if tick is not None:
            tick.end()
        return self.lm_head(hidden[:, -1]), int(deltas[0, 0])

    @staticmethod
    def _media_after(start: int, types: torch.Tensor, pixel_values, image_grid_thw, pixel_values_videos,
                     video_grid_thw) -> tuple:
        """The pixels and grids of the images and videos that begin at or after `start`."""
        grids = {1: grid_list(image_grid_thw), 2: grid_list(video_grid_thw)}
        before = {1: 0, 2: 0}
        for kind, first, end, _ in media_spans(types[0].tolist(), grids[1], grids[2]):
            if first < start < end:
                raise ValueError(f"a prompt cannot be resumed at token {start}: an {_NAMES[kind]} spans "
                                 f"tokens {first}..{end - 1}")
            before[kind] += end <= start
        out = []
        for kind, pixels, grid in ((1, pixel_values, image_grid_thw), (2, pixel_values_videos, video_grid_thw)):
            n = before[kind]
            if n and n == len(grids[kind]):
                pixels = grid = None
            elif n:
                rows = sum(t * h * w for t, h, w in grids[kind][:n])
                pixels, grid = pixels[rows:], grid[n:]
            out += [pixels, grid]
        return tuple(out)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, start: int, rope_delta: int) -> torch.Tensor:
        """Text tokens (1, S) at cache positions [start, start+S) -> logits (1, S, vocab)."""
        tokens = tokens.to(self.device)
        S = tokens.shape[1]
        pos = torch.arange(start, start + S, device=tokens.device) + rope_delta
        position_ids = pos.view(1, 1, S).expand(3, 1, S)
        hidden = self.language_model(self.language_model.embed_tokens(tokens), position_ids, start=start,
                                     use_cache=True)
        return self.lm_head(hidden)

    @torch.no_grad()
    def decode_rows(self, tokens: torch.Tensor, starts: list[int], deltas: list[int],
                    caches: list[list]) -> torch.Tensor:
        """One token for each of several sequences at once: tokens (B, 1), row b at position
        starts[b] of its own KV cache caches[b] (a list of per-layer KVCache, batch 1, as
        TextModel.setup_cache makes) with rope delta deltas[b] -> logits (B, vocab). The weights
        are read once for all rows (a decode step is bound by reading them); attention runs per
        row over what its cache holds. Row b's logits equal `decode` of that row alone."""
        tokens = tokens.to(self.device)
        B = tokens.shape[0]
        pos = torch.tensor([s + d for s, d in zip(starts, deltas, strict=True)], device=tokens.device)
        hidden = self.language_model(self.language_model.embed_tokens(tokens), pos.view(1, B, 1).expand(3, B, 1),
                                     start=list(starts), use_cache=True, rows=caches)
        return self.lm_head(hidden[:, -1])

    def decode_rows_static(self, tokens: torch.Tensor, input_pos: torch.Tensor, rope_delta: torch.Tensor,
                           caches: list[list]) -> torch.Tensor:
        """decode_rows with shapes that never change (a CUDA graph's, batch_graphs.py): tokens
        (B, 1), each row's position (B,) and rope delta (B,) as tensors; row b's attention reads its
        whole cache under a mask, as decode_step does for one."""
        B, dtype = tokens.shape[0], self.language_model.norm.weight.dtype
        position_ids = (input_pos + rope_delta).view(1, B, 1).expand(3, B, 1)
        masks = []
        for b, row in enumerate(caches):
            length = row[0].k.shape[2]
            written = (torch.arange(length, device=tokens.device) <= input_pos[b]).view(1, 1, 1, length)
            masks.append(torch.zeros(written.shape, dtype=dtype, device=tokens.device).masked_fill_(
                ~written, float("-inf")))
        hidden = self.language_model(self.language_model.embed_tokens(tokens), position_ids,
                                     start=[input_pos[b:b + 1] for b in range(B)], mask=masks, use_cache=True,
                                     rows=caches)
        return self.lm_head(hidden[:, -1])

    def decode_step(self, token: torch.Tensor, input_pos: torch.Tensor, rope_delta: torch.Tensor) -> torch.Tensor:
        """One token (1, 1) at cache position `input_pos` (1,) -> logits (1, vocab), with shapes that
        never change: attention reads the whole cache under a mask, the position is a tensor, no
        Python branches on values. This is the step `torch.compile` compiles (generate.py). S tokens
        (1, S) at [input_pos, input_pos + S) -> (S, vocab): a token and the drafts after it (lookup.py)."""
        S, cache_len = token.shape[1], self.language_model.caches[0].k.shape[2]
        steps = torch.arange(S, device=token.device)
        position_ids = (input_pos + rope_delta + steps).view(1, 1, S).expand(3, 1, S)  # (3, B, S)
        # additive (0 / -inf) in the activation dtype, made once per step: a boolean mask would be
        # converted to this inside attention, once per layer; row i sees the cache up to its own token
        dtype = self.language_model.norm.weight.dtype
        last = (input_pos + steps).view(S, 1)  # the last position each row sees
        written = (torch.arange(cache_len, device=token.device) <= last).view(1, 1, S, cache_len)
        mask = torch.zeros(written.shape, dtype=dtype, device=token.device).masked_fill_(~written, float("-inf"))
        hidden = self.language_model(self.language_model.embed_tokens(token), position_ids, start=input_pos,
                                     mask=mask, use_cache=True)
        return self.lm_head(hidden[0])


_NAMES = {1: "image", 2: "video"}
# A long prompt goes through the decoder this many tokens at a time: its activations (an MLP's
# intermediate is 2 x 13696 values a token for 9B) then stay bounded, so a 30k-token PDF prompt
# needs ~0.3 GB of them, not ~5 GB, beside 20 GB of bfloat16 weights on a 24 GB card.
PREFILL_CHUNK = 2048


def on_model_device(device: torch.device, **tensors) -> dict:
    """The model's boundary: every tensor given (None stays None) on `device`, ids as int64. The
    one place through which prompt tensors reach the weights, wherever the caller made them."""
    out = {}
    for name, value in tensors.items():
        if value is not None:
            value = value.to(device, non_blocking=True)
            if name in ("input_ids", "types", "position_ids"):
                value = value.long()
        out[name] = value
    return out


def grid_list(grid_thw) -> list[tuple[int, int, int]]:
    if grid_thw is None:
        return []
    rows = grid_thw.tolist() if torch.is_tensor(grid_thw) else grid_thw
    return [tuple(int(v) for v in row) for row in rows]
