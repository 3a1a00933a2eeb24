"""What every loader hands to the prompt builder: one image or one video as model-ready patches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # (torch is imported when a loader first runs, not with the CLI's parsing)
    from glmv_cli.model.patch_codes import PatchCodes


@dataclass(frozen=True)
class VisualInput:
    """One image (a PDF page is one too) or one video, laid out as the vision tower reads it.

    pixel_values: (gt*gh*gw, 3*T*p*p) float32 patch rows in block-major order (see patches.py), or
        (what the loaders make) the same rows as PatchCodes, the uint8 levels they are looked up
        from, which the model expands on its own device; `rows()` gives the floats either way.
    grid_thw: (gt, gh, gw) in patches; images have gt == 1, videos one gt per frame pair.
    timestamps: videos only, seconds of the first frame of each frame pair (len == gt).
    source: what the user named (a path, "-", a URL), for messages.
    original_size: (width, height) of the input before resizing, to map grounding boxes back.
    """

    kind: Literal["image", "video"]
    pixel_values: np.ndarray | PatchCodes
    grid_thw: tuple[int, int, int]
    timestamps: tuple[float, ...] = field(default=())
    source: str = ""
    original_size: tuple[int, int] = (0, 0)

    def rows(self) -> np.ndarray:
        """The float32 patch rows, whichever form pixel_values holds."""
        if isinstance(self.pixel_values, np.ndarray):
            return self.pixel_values
        return self.pixel_values.rows().numpy()

    def tokens_per_frame(self, merge_size: int = 2) -> int:
        """<|image|> placeholders for one image or one frame pair."""
        _, h, w = self.grid_thw
        return h * w // merge_size**2
