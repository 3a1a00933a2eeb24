"""The last answers a model gave, kept on disk beside the last conversation (app/history.py's state
folder), so that the next `glmv ask` process drafts from them as one process does
(lookup.RecentAnswers): a script that asks one question about file after file, one process each,
gets answers that repeat one another's phrasing and keys, and each can be drafted from the last.

Only ids go to disk (`last.answers.json`, at most lookup.RECENT_IDS of them), with the checkpoint
folder they belong to (another checkpoint's ids mean other words). A draft is only ever a guess the
model checks, so a stale or foreign file costs nothing but a missed draft; one that cannot be read is
passed over. GLMV_NO_HISTORY=1 keeps nothing.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from glmv_cli.app import history

log = logging.getLogger(__name__)

FILE = "last.answers.json"


def path() -> Path:
    return history.state_dir() / FILE


def _owner(session) -> str:
    return str(Path(session.folder).resolve())


def save(session) -> None:
    """The loaded model's last answers to disk; a warning, never a failure, where it cannot write."""
    if not history.enabled() or not session.loaded:
        return
    answers = session.glmv.answers.snapshot()
    target = path()
    if not answers or not target.parent.is_dir():
        return
    try:
        tmp = target.with_name(f"{FILE}.{os.getpid()}")
        tmp.write_text(json.dumps({"model": _owner(session), "answers": answers}))
        tmp.replace(target)
    except OSError as e:
        log.warning("could not keep the last answers for the next question's drafts (%s)", e)


def restore(session) -> bool:
    """The kept answers into the loaded model's recent answers, when they are this checkpoint's."""
    target = path()
    if not (history.enabled() and target.is_file()):
        return False
    try:
        kept = json.loads(target.read_text())
        if kept.get("model") != _owner(session):
            return False
        answers = [[int(t) for t in a] for a in kept["answers"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        log.debug("passing over the kept answers %s: %s", target, e)
        return False
    for ids in answers:
        session.glmv.answers.add(ids)
    return True
