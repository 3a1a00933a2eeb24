"""Patch rows carried as the uint8 pixel levels they come from, expanded on the model's device.

Every value of an image's or a video's patch rows (N, 3*T*p*p) is a table lookup, table[level,
channel] of one uint8 pixel (the image and the video processors normalise with slightly different
float arithmetic, so each has its own table), and an image's T temporal copies are equal. For
GLM-4.1V's 1120x1120 image that is 30 MB of float32 built from 3.7 MB of levels. Carrying the
levels to the model and expanding them there (one gather, on the GPU when the model is there) takes
the building of the rows and most of the host-to-device copy out of the time to the first token.
The rows are the same bits either way: the same table, values only copied.

`patch_rows` is what the vision tower calls on whatever it was given, in its patch weights' dtype
(a bfloat16 model never builds the float32 rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PatchCodes:
    """codes (N, C, Tc, P) uint8, Tc == 1 standing for `temporal` equal copies or Tc == temporal;
    table (256, C) float32, what each level of each channel stands for."""

    codes: torch.Tensor
    table: torch.Tensor
    temporal: int

    def __post_init__(self):
        N, C, Tc, P = self.codes.shape
        if self.codes.dtype != torch.uint8 or self.table.shape != (256, C) or Tc not in (1, self.temporal):
            raise ValueError(f"patch codes (uint8 (N, C, 1 or T, P)) and table ((256, C)) do not fit: "
                             f"{self.codes.dtype} {tuple(self.codes.shape)}, {tuple(self.table.shape)}, "
                             f"T={self.temporal}")

    @property
    def shape(self) -> torch.Size:
        """The shape of the rows they stand for."""
        N, C, _, P = self.codes.shape
        return torch.Size((N, C * self.temporal * P))

    @property
    def device(self) -> torch.device:
        return self.codes.device

    def __getitem__(self, rows: slice) -> PatchCodes:
        """Some of the rows, as codes (e.g. the images after the first few)."""
        return PatchCodes(self.codes[rows], self.table, self.temporal)

    def to(self, device, non_blocking: bool = False) -> PatchCodes:
        return PatchCodes(self.codes.to(device, non_blocking=non_blocking),
                          self.table.to(device, non_blocking=non_blocking), self.temporal)

    def rows(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The patch rows (N, C*T*P), built where the codes are: float32, or straight in `dtype`
        (the same values as the float32 rows cast to it, without the float32 buffer)."""
        N, C, Tc, P = self.codes.shape
        flat = self.table.t().to(dtype).contiguous().view(-1)  # (C * 256): channel c's levels at [256c, 256c + 256)
        offsets = (256 * torch.arange(C, dtype=torch.int32, device=self.device)).view(1, C, 1, 1)
        values = flat[self.codes.int() + offsets]  # (N, C, Tc, P)
        return values.expand(N, C, self.temporal, P).reshape(N, C * self.temporal * P)

    @staticmethod
    def cat(parts: Sequence[PatchCodes]) -> PatchCodes:
        """Several images' codes as one (they share one table and layout: one checkpoint's images)."""
        first = parts[0]
        if any(not torch.equal(p.table, first.table) or p.temporal != first.temporal
               or p.codes.shape[1:] != first.codes.shape[1:] for p in parts[1:]):
            raise ValueError("patch codes with different tables or layouts cannot be joined; join their rows")
        return PatchCodes(torch.cat([p.codes for p in parts]), first.table, first.temporal)


def patch_rows(pixels: torch.Tensor | PatchCodes, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Patch rows from either form, in `dtype` (None: float32 from codes, float rows as they are)."""
    if isinstance(pixels, PatchCodes):
        return pixels.rows(dtype or torch.float32)
    return pixels if dtype is None else pixels.to(dtype)
