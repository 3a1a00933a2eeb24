"""Pixels -> the flattened patch rows the GLM-4.1V vision tower reads.

The reference's `smart_resize` rule (sizes a multiple of patch*merge, a pixel budget), the CLIP
normalisation, and the exact patch layout: each row is one 14x14 patch flattened as
(C=3, T=2, 14, 14), rows in *block-major* order (the four patches of a 2x2 merge block are
consecutive, blocks row-major). Images duplicate their single frame along T; videos pair frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from glmv_cli.errors import InputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT_RATIO = 200


@dataclass(frozen=True)
class PatchSpec:
    """The sizes a checkpoint's preprocessor configs fix (defaults: GLM-4.1V's)."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 12544
    max_pixels: int = 9633792
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def row_size(self) -> int:
        return 3 * self.temporal_patch_size * self.patch_size**2


def smart_resize(
    num_frames: int, height: int, width: int, *, temporal_factor: int = 2, factor: int = 28,
    min_pixels: int = 112 * 112, max_pixels: int = 14 * 14 * 2 * 2 * 2 * 6144,
) -> tuple[int, int]:
    """Target (height, width): multiples of `factor`, aspect ratio kept, t*h*w inside the budget.

    The pixel budget counts `num_frames` frames; images pass num_frames = temporal_factor, so an
    image's area lies between min_pixels/2 and max_pixels/2. Same rule (and banker's rounding)
    as the reference processors.
    """
    if num_frames < temporal_factor:
        raise InputError(f"a video needs at least {temporal_factor} frames, got {num_frames}")
    if height < factor or width < factor:  # upscale the short side to `factor` first
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise InputError(
            f"aspect ratio {max(height, width) / min(height, width):.0f}:1 is beyond the model's "
            f"{MAX_ASPECT_RATIO}:1 limit; crop the image or split it into parts"
        )
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def normalize(pixels: np.ndarray, spec: PatchSpec) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W), rescaled by 1/255 and CLIP-normalised."""
    x = pixels.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.moveaxis(x, -1, -3)


def patchify_frames(frames: np.ndarray, spec: PatchSpec) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Normalised frames (F, C, H, W) -> patch rows (gt*gh*gw, C*T*p*p) and grid (gt, gh, gw).

    An image is passed as one frame and duplicated along T; an odd frame count repeats the last
    frame. H and W must be multiples of patch*merge (smart_resize guarantees it).
    """
    p, m, T = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    if frames.shape[0] % T:
        pad = T - frames.shape[0] % T
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
    F_, C, H, W = frames.shape
    gt, gh, gw = F_ // T, H // p, W // p
    x = frames.reshape(gt, T, C, gh // m, m, p, gw // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (gt, gh/m, gw/m, m, m, C, T, p, p)
    rows = np.ascontiguousarray(x).reshape(gt * gh * gw, C * T * p * p)
    return rows, (gt, gh, gw)


def image_tokens(grid_thw: tuple[int, int, int], merge_size: int = 2) -> int:
    """How many <|image|> placeholders (LLM positions) one grid costs."""
    t, h, w = grid_thw
    return t * h * w // merge_size**2
