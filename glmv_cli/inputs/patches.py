"""Pixels -> the flattened patch rows the GLM-4.1V vision tower reads.

The reference's `smart_resize` rule (sizes a multiple of patch*merge, a pixel budget), the CLIP
normalisation, and the exact patch layout: each row is one 14x14 patch flattened as
(C=3, T=2, 14, 14), rows in *block-major* order (the four patches of a 2x2 merge block are
consecutive, blocks row-major). Images duplicate their single frame along T; videos pair frames.
The sizes come from the checkpoint's preprocessor configs (`load_patch_specs`), with the user's
pixel budgets applied on top (`with_pixel_limits`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from glmv_cli.errors import InputError, ModelError

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


def level_table(spec: PatchSpec) -> np.ndarray:
    """(256, 3) float32: what each uint8 level of each channel becomes, with the PIL image
    processor's exact arithmetic (rescale in float64 by 1/255, cast to float32, normalise in float32)."""
    levels = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    return (levels[:, None] - mean) / std


def normalize_image(pixels: np.ndarray, spec: PatchSpec) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W), normalised by table lookup (bit-identical, cheap)."""
    out = level_table(spec)[pixels, np.arange(3)]  # (H, W, 3)
    return np.ascontiguousarray(np.moveaxis(out, -1, 0))  # (3, H, W)


def image_codes(pixels: np.ndarray, spec: PatchSpec) -> tuple[np.ndarray, tuple[int, int, int]]:
    """uint8 (H, W, 3) -> the patches' uint8 levels (gh*gw, C, 1, p*p), laid out as the rows are
    (block-major, one row per patch; the image's T copies left implicit), and grid (1, gh, gw).
    Rows are these levels looked up in level_table, where the model is (model.patch_codes)."""
    p, m = spec.patch_size, spec.merge_size
    H, W, C = pixels.shape
    gh, gw = H // p, W // p
    x = pixels.reshape(gh // m, m, p, gw // m, m, p, C).transpose(0, 3, 1, 4, 6, 2, 5)  # (gh/m, gw/m, m, m, C, p, p)
    return np.ascontiguousarray(x).reshape(gh * gw, C, 1, p * p), (1, gh, gw)


# -- the checkpoint's preprocessor configs -------------------------------------------------------

IMAGE_CONFIG = "preprocessor_config.json"
VIDEO_CONFIG = "video_preprocessor_config.json"
PROCESSOR_CONFIG = "processor_config.json"  # transformers v5 nests both under one file
VIDEO_DEFAULT = PatchSpec(max_pixels=47040000)  # Glm4vVideoProcessor's class default


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path} is not readable JSON ({e}); re-download the checkpoint") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} should hold a JSON object; re-download the checkpoint")
    return data


def spec_from_dict(cfg: dict, default: PatchSpec = PatchSpec()) -> PatchSpec:
    """A PatchSpec from one preprocessor config dict; missing keys keep `default`'s values.

    Pixel budgets come from size.shortest_edge / size.longest_edge, or the legacy spellings
    size.min_pixels / size.max_pixels and top-level min_pixels / max_pixels (these win, as in
    the Qwen2-VL-era processors).
    """
    size = cfg.get("size") if isinstance(cfg.get("size"), dict) else {}
    min_pixels = cfg.get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels")
    max_pixels = cfg.get("max_pixels") or size.get("longest_edge") or size.get("max_pixels")
    fields = {
        "patch_size": cfg.get("patch_size"), "temporal_patch_size": cfg.get("temporal_patch_size"),
        "merge_size": cfg.get("merge_size"), "min_pixels": min_pixels, "max_pixels": max_pixels,
        "mean": tuple(cfg["image_mean"]) if cfg.get("image_mean") else None,
        "std": tuple(cfg["image_std"]) if cfg.get("image_std") else None,
    }
    spec = replace(default, **{k: v for k, v in fields.items() if v is not None})
    _check(spec)
    return spec


def _check(spec: PatchSpec) -> None:
    ints = (spec.patch_size, spec.temporal_patch_size, spec.merge_size, spec.min_pixels, spec.max_pixels)
    if not all(isinstance(v, int) and v > 0 for v in ints):
        raise ModelError(f"preprocessor config has non-positive or non-integer sizes: {spec}")
    if len(spec.mean) != 3 or len(spec.std) != 3 or not all(s > 0 for s in spec.std):
        raise ModelError(f"preprocessor config needs 3 image_mean and 3 positive image_std values: {spec}")


def load_patch_specs(folder: Path) -> tuple[PatchSpec, PatchSpec]:
    """(image spec, video spec) of a checkpoint folder.

    Images: processor_config.json's "image_processor", else preprocessor_config.json, else the
    GLM-4.1V defaults. Videos: processor_config.json's "video_processor", else
    video_preprocessor_config.json, else the image config file (transformers' own fallback), else
    the GLM-4.1V video defaults.
    """
    folder = Path(folder)
    nested = _read_json(folder / PROCESSOR_CONFIG) or {}
    image_cfg = nested.get("image_processor") or _read_json(folder / IMAGE_CONFIG)
    video_cfg = nested.get("video_processor") or _read_json(folder / VIDEO_CONFIG) or image_cfg
    image = spec_from_dict(image_cfg) if image_cfg else PatchSpec()
    video = spec_from_dict(video_cfg, VIDEO_DEFAULT) if video_cfg else VIDEO_DEFAULT
    return image, video


def with_pixel_limits(spec: PatchSpec, *, min_pixels: int | None = None,
                      max_pixels: int | None = None) -> PatchSpec:
    """The user's --min-pixels / --max-pixels applied to a spec (None keeps the checkpoint's value).

    The numbers mean what the processor's size.shortest_edge / size.longest_edge mean: a budget for
    frames x height x width, so an image (counted as temporal_patch_size frames) gets at most
    max_pixels / 2 pixels of area, and a video shares max_pixels among all its sampled frames.
    """
    spec = replace(spec, **{k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels))
                            if v is not None})
    floor = spec.temporal_patch_size * spec.factor**2
    if spec.max_pixels < floor:
        raise InputError(f"--max-pixels {spec.max_pixels} is below the smallest possible input "
                         f"({floor} = {spec.temporal_patch_size} x {spec.factor} x {spec.factor}); raise it")
    if spec.min_pixels <= 0 or spec.min_pixels > spec.max_pixels:
        raise InputError(f"--min-pixels {spec.min_pixels} must be positive and at most --max-pixels "
                         f"{spec.max_pixels}")
    return spec


def max_pixels_for(tokens: int, spec: PatchSpec) -> int:
    """The --max-pixels that reads an image as at most about `tokens` tokens: an image gets
    max_pixels / temporal_patch_size of area, a token covers factor x factor pixels."""
    return spec.temporal_patch_size * tokens * spec.factor**2
