"""3D (t, h, w) positions for the text decoder's M-RoPE, and the rope delta used while decoding.

The prompt is cut into runs of one token type (0 text, 1 image, 2 video frame pair):
  * a text run of length L takes positions p .. p+L-1 on all three axes, then p += L;
  * a vision run with merged grid H x W takes t = p, h = p + i, w = p + j for its row-major (i, j),
    then p += max(H, W) (not H*W: an image costs few positions however many tokens it has).
Every frame pair of a video is its own run (its own grid), exactly like an image.

Worked example (merge 2): `[gMASK]<sop><|user|>\\n<|begin_of_image|>` + 24 x `<|image|>` (a 112x168
image: grid (1, 8, 12) -> 4 x 6 merged) + `<|end_of_image|>Describe this.<|assistant|>\\n`:
    idx 0..4    text   (0,0,0) ... (4,4,4)
    idx 5..28   image  t=5, h=5..8, w=5..10: (5,5,5), (5,5,6), ..., (5,5,10), (5,6,5), ...
    idx 29      text   (11,11,11)   # 5 + max(4, 6)
    idx 30..35  text   12 .. 17
rope_delta = (max position + 1) - number of tokens = 18 - 36 = -18: the k-th generated token
(k = 0, 1, ...) sits at position 36 + k + delta on all three axes.
"""

from __future__ import annotations

from itertools import groupby, islice

import torch


def mm_token_types(input_ids: torch.Tensor, image_token_id: int, video_start_id: int,
                   video_end_id: int) -> torch.Tensor:
    """(B, S) types: 1 for image placeholders, 2 for placeholders inside a video span, else 0."""
    is_image = input_ids == image_token_id
    inside_video = (input_ids == video_start_id).cumsum(-1) > (input_ids == video_end_id).cumsum(-1)
    types = torch.zeros_like(input_ids)
    types[is_image] = 1
    types[is_image & inside_video] = 2
    return types


def text_run(start: int, length: int) -> torch.Tensor:
    """(3, L): the same running positions on all three axes."""
    return torch.arange(start, start + length).expand(3, -1)


def vision_run(start: int, grid_h: int, grid_w: int, merge: int) -> tuple[torch.Tensor, int]:
    """(3, H*W) positions of one image / frame pair, and how far the running position advances."""
    H, W = grid_h // merge, grid_w // merge
    t = torch.full((H * W,), start)
    h = torch.arange(H).repeat_interleave(W) + start
    w = torch.arange(W).repeat(H) + start
    return torch.stack([t, h, w]), max(H, W)


def frame_grids(image_grids: list[tuple[int, int, int]], video_grids: list[tuple[int, int, int]]):
    """Per modality, one (h, w) per vision run in prompt order: images as they are, each video
    split into its gt frame pairs."""
    return {
        1: iter([(h, w) for _, h, w in image_grids]),
        2: iter([(h, w) for t, h, w in video_grids for _ in range(t)]),
    }


def sequence_positions(types: list[int], grids: dict, merge: int) -> tuple[torch.Tensor, int]:
    """Positions (3, S) for one unpadded sequence of token types, and its rope delta."""
    runs, pos = [], 0
    for kind, group in groupby(types):
        length = len(list(group))
        if kind == 0:
            runs.append(text_run(pos, length))
            pos += length
            continue
        try:
            h, w = next(grids[kind])
        except StopIteration:
            raise ValueError(f"more {'image' if kind == 1 else 'video'} placeholder runs than grids") from None
        run, advance = vision_run(pos, h, w, merge)
        if run.shape[1] != length:
            raise ValueError(f"a run of {length} placeholders does not match its grid {h}x{w} "
                             f"({run.shape[1]} tokens)")
        runs.append(run)
        pos += advance
    positions = torch.cat(runs, dim=1) if runs else torch.zeros(3, 0, dtype=torch.long)
    delta = int(positions.max()) + 1 - len(types) if len(types) else 0
    return positions, delta


def rope_positions(types: torch.Tensor, image_grids: list, video_grids: list, merge: int,
                   attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token types (B, S) -> positions (3, B, S) and rope deltas (B, 1).

    Padded positions (attention_mask == 0) get position 0. Grids are consumed across the batch in
    order, as the processor lays them out.
    """
    device, types = types.device, types.cpu()
    mask = attention_mask.cpu().bool() if attention_mask is not None else torch.ones_like(types, dtype=torch.bool)
    B, S = types.shape
    grids = frame_grids([tuple(g) for g in image_grids], [tuple(g) for g in video_grids])
    positions = torch.zeros(3, B, S, dtype=torch.long)
    deltas = torch.zeros(B, 1, dtype=torch.long)
    for b in range(B):
        pos, delta = sequence_positions(types[b][mask[b]].tolist(), grids, merge)
        positions[:, b, mask[b]] = pos
        deltas[b, 0] = delta
    return positions.to(device), deltas.to(device)


def media_spans(types: list[int], image_grids: list, video_grids: list) -> list[tuple[int, int, int, int]]:
    """Each image and each video of one unpadded sequence, in prompt order, as (kind, first
    placeholder, one past the last, its grid's index among that kind's grids). A video spans its
    frame pairs and the timestamps between them."""
    runs: dict[int, list[tuple[int, int]]] = {1: [], 2: []}
    at = 0
    for kind, group in groupby(types):
        length = len(list(group))
        if kind:
            runs[kind].append((at, at + length))
        at += length
    spans = [(1, start, end, k) for k, (start, end) in enumerate(runs[1][:len(image_grids)])]
    frames = iter(runs[2])
    for k, (t, _, _) in enumerate(video_grids):
        mine = list(islice(frames, int(t)))
        if mine:
            spans.append((2, mine[0][0], mine[-1][1], k))
    return sorted(spans, key=lambda span: span[1])
