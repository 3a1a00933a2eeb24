"""The answer a demo model's thinking implies, read from what it says it sees, for measuring how
often the answer agrees with the thinking.

The implied answer comes from the description, not from a concluding sentence ("So the blue square
is on page 5." is dropped first): agreement then measures whether the answer follows from what the
model saw, whichever thinking style (tasks.THINKING) it was trained on. None when the thinking
does not say (a malformed or cut-off thinking), which counts as disagreeing.
"""

from __future__ import annotations

import re

from glmv_cli.demo.tasks import COLORS, NUMBER_WORDS, SHAPES

KIND = "|".join(SHAPES)
COLOR = "|".join(COLORS)


def description(thinking: str) -> str:
    """The thinking without its concluding sentence ('... So the number is 37.')."""
    return re.split(r"(?:^|\s)So\b", thinking, maxsplit=1)[0].strip()


def implied_answer(task: str, thinking: str) -> str | None:
    """What the answer to `task`'s question is, going by the thinking's description."""
    seen = description(thinking)
    if task == "shapes_count":
        listed = re.search(r"From top to bottom: ([^:.]*)", seen)
        if listed:
            return str(len(re.findall(rf"\b(?:{KIND})\b", listed.group(1))))
        said = re.search(rf"\b({'|'.join(NUMBER_WORDS.values())}) shapes?\b", seen)
        return str({w: n for n, w in NUMBER_WORDS.items()}[said.group(1)]) if said else None
    if task == "shapes_color":
        return _only(re.findall(rf"\b({COLOR}) circle\b", seen))
    if task == "shapes_shape":
        return _only(re.findall(rf"\bred ({KIND})\b", seen))
    if task == "numbers":
        digits = re.findall(r"\d", seen)
        return "".join(digits) if 1 <= len(digits) <= 2 else None
    if task == "pdf":
        return _only(re.findall(r"page (\d+) has a blue square\b", seen, flags=re.IGNORECASE))
    if task == "video":
        return _only(re.findall(r"appears at (\d+) seconds?\b", seen))
    raise ValueError(task)


def _only(found: list[str]) -> str | None:
    """The one thing found, or None when the thinking names none or several (it then implies no
    single answer)."""
    return found[0] if len(set(found)) == 1 else None
