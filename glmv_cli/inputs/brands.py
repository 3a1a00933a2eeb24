"""The brands of an ISO base media file (MP4, MOV, HEIC, AVIF): what its `ftyp` box says it is.

HEIC and AVIF share a container and may both carry the generic major brand "mif1"; the compatible
brands tell them apart ("heic" / "avif"). Reads only the first bytes.
"""

from __future__ import annotations

import struct

HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"})
AVIF_BRANDS = frozenset({b"avif", b"avis"})
GENERIC_IMAGE_BRANDS = frozenset({b"mif1", b"msf1"})


def ftyp_brands(head: bytes) -> list[bytes]:
    """[major brand, compatible brands...] of a file starting with an ftyp box, else []."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return []
    size = struct.unpack(">I", head[:4])[0]
    end = min(size if size >= 16 else 16, len(head))
    return [head[8:12]] + [head[i:i + 4] for i in range(16, end - 3, 4)]


def image_kind(head: bytes) -> str | None:
    """"avif", "heic", or None (not a still-image ISO file: a video, or not ISO at all)."""
    brands = ftyp_brands(head)
    if not brands:
        return None
    if brands[0] in AVIF_BRANDS or (brands[0] in GENERIC_IMAGE_BRANDS and AVIF_BRANDS & set(brands)):
        return "avif"
    if brands[0] in HEIC_BRANDS or brands[0] in GENERIC_IMAGE_BRANDS:
        return "heic"
    return None
