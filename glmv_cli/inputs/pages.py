"""Page selections as users write them: "1-3,7", "5-", "-2", "all" -> 1-based page numbers."""

from __future__ import annotations

import re

from glmv_cli.errors import InputError

_PART = re.compile(r"^(\d*)\s*-\s*(\d*)$|^(\d+)$")


def parse_pages(spec: str | None, page_count: int, *, source: str = "the PDF") -> tuple[int, ...]:
    """1-based page numbers in the order written, repeats dropped; None, "" or "all" is every page.

    A part is "N", "N-M", "N-" (to the last page) or "-M" (from the first); parts are separated
    by commas. Bad syntax, page 0, reversed ranges and pages past the end raise InputError.
    """
    if spec is None or spec.strip().lower() in ("", "all"):
        return tuple(range(1, page_count + 1))
    picked: dict[int, None] = {}
    for part in spec.split(","):
        part = part.strip()
        m = _PART.match(part)
        if not m or part == "-":
            raise InputError(
                f"bad page selection {spec!r} at {part!r}: use numbers and ranges like 1-3,7 or 5- "
                f"(pages count from 1)"
            )
        if m.group(3):
            first = last = int(m.group(3))
        else:
            first = int(m.group(1)) if m.group(1) else 1
            last = int(m.group(2)) if m.group(2) else page_count
        if first < 1:
            raise InputError(f"bad page selection {spec!r}: pages count from 1, not 0")
        if max(first, last) > page_count:
            raise InputError(
                f"page {max(first, last)} is out of range: {source} has {page_count} "
                f"page{'s' * (page_count != 1)} (--pages {spec})"
            )
        if last < first:
            raise InputError(f"bad page selection {spec!r}: the range {part} runs backwards; write {last}-{first}")
        picked.update(dict.fromkeys(range(first, last + 1)))
    return tuple(picked)
