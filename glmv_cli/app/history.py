"""The last conversation of `glmv ask`, kept on disk so that `glmv ask -c "and the other one?"`
continues it, as simonw/llm's `-c` does.

It lives in `$XDG_STATE_HOME/glmv/last.json` (by default ~/.local/state/glmv; `GLMV_STATE_DIR`
moves it, `GLMV_NO_HISTORY=1` turns it off): the model, the system prompt and each turn's question,
answer (as the model wrote it, and the answer alone) and attachments. A file attachment is kept
as its path and sha256, read again on -c and refused if it changed; bytes that have no file
(stdin, a download) are kept beside it, named by their sha256. How attachments were read (pages,
dpi, fps, what a long PDF's pages were ranked against) is kept too; a PDF's password never is.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from glmv_cli.app.attachments import Attachment, from_path
from glmv_cli.app.events import GenerationOptions
from glmv_cli.app.loaders import LoadOptions
from glmv_cli.errors import InputError

log = logging.getLogger(__name__)

VERSION = 1
NOT_KEPT = ("password",)  # a PDF's password is a secret
ROOM = ("max_new_tokens", "max_context")  # a turn's settings that chose how much of a long PDF went in


def state_dir() -> Path:
    if os.environ.get("GLMV_STATE_DIR"):
        return Path(os.environ["GLMV_STATE_DIR"]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base).expanduser() / "glmv"


def enabled() -> bool:
    return os.environ.get("GLMV_NO_HISTORY", "").strip().lower() in ("", "0", "false", "no", "off")


@dataclass
class Record:
    """The last conversation: what `glmv ask -c` continues."""

    model: str | None = None
    system: str | None = None
    turns: list[dict] = field(default_factory=list)
    new_bytes: dict[str, bytes] = field(default_factory=dict, repr=False)  # sha256 -> bytes for save() to write

    def add(self, question: str, attachments: list[Attachment], raw: str, answer: str, load: LoadOptions,
            generation=None) -> None:
        kept = {k: v for k, v in dataclasses.asdict(load).items() if k not in NOT_KEPT}
        for a in attachments:
            if a.path is None:
                self.new_bytes[a.sha256] = a.data
        turn = {"question": question, "attachments": [_keep(a) for a in attachments], "raw": raw, "answer": answer,
                "load": kept}
        if generation is not None:  # (the room its answer had: a long PDF's pages were chosen for it)
            turn["room"] = {k: getattr(generation, k) for k in ROOM}
        self.turns.append(turn)


def begin(resume: bool, model: str | None, system: str | None) -> tuple[Record, str | None, str | None]:
    """(the record to add to, the model, the system prompt): with `resume` the last conversation,
    its model and system prompt where none is given; else a new record."""
    if not resume:
        return Record(system=system), model, system
    record = load_last()
    return record, model or record.model, system if system is not None else record.system


def restore_into(conversation, record: Record, load: LoadOptions, generation) -> None:
    """The record's turns into `conversation` (a Conversation or RemoteConversation)."""
    for turn in record.turns:
        room = {k: v for k, v in (turn.get("room") or {}).items() if k in ROOM}
        gen = dataclasses.replace(generation or GenerationOptions(), **room) if room else generation
        conversation.restore(turn["question"], attachments_of(turn), raw=turn["raw"], answer=turn["answer"],
                             load=load_options_of(turn, load), generation=gen)


def answered(record: Record, model: str | None, question: str, attachments: list[Attachment], result,
             load: LoadOptions, generation=None) -> None:
    """A new turn (its `result`) joins the record, which is saved; `model`: the local checkpoint's
    name (None for a server's, which is not kept); `generation`: the turn's, whose answer room
    restore_into gives it again (its PDF pages are then chosen as they were)."""
    if model is not None:  # a relative folder, as a path that works from anywhere
        record.model = str(Path(model).resolve()) if Path(model).is_dir() else model
    record.add(question, attachments, result.raw, result.answer, load, generation)
    save(record)


def load_last() -> Record:
    """The last conversation; an InputError when there is none to continue."""
    path = state_dir() / "last.json"
    try:
        data = json.loads(path.read_text())
        if data.get("version") != VERSION:
            raise ValueError(f"version {data.get('version')}")
        if data.get("not_kept"):
            raise InputError(f"the last command ({data['not_kept']}) keeps no conversation to continue; ask "
                             f"about the file again without -c")
        return Record(model=data.get("model"), system=data.get("system"), turns=list(data["turns"]))
    except FileNotFoundError:
        raise InputError("no conversation to continue (-c continues the last `glmv ask`); ask without -c "
                         "first") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"the last conversation ({path}) cannot be read ({e}); ask without -c to start "
                         "a new one") from None


def not_kept(command: str) -> None:
    """The last command (`glmv pdf --map-reduce`, `glmv ask --each`) answered without a conversation
    to go on with: a later -c says so instead of continuing an older one."""
    if not enabled():
        return
    try:
        state_dir().mkdir(parents=True, exist_ok=True)
        _write_last(state_dir(), {"version": VERSION, "not_kept": command})
    except OSError as e:
        log.warning("could not note that -c has nothing to continue (%s)", e)


def _write_last(folder: Path, data: dict) -> None:
    tmp = folder / f"last.json.{os.getpid()}"  # each process its own, then one atomic rename
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    tmp.replace(folder / "last.json")


def save(record: Record) -> None:
    """Write `record` as the last conversation (a warning, not a failure, where it cannot be)."""
    if not enabled():
        return
    folder = state_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        blobs = folder / "blobs"
        for digest, data in record.new_bytes.items():
            if not (blobs / digest).exists():
                blobs.mkdir(exist_ok=True)
                (blobs / digest).write_bytes(data)
        _write_last(folder, {"version": VERSION, "model": record.model, "system": record.system,
                             "turns": record.turns})
        _prune(blobs, record)
    except OSError as e:
        log.warning("could not keep this conversation for -c (%s); set GLMV_STATE_DIR to a writable folder", e)


def attachments_of(turn: dict) -> list[Attachment]:
    """A kept turn's attachments, read again: an InputError if a file is gone or changed."""
    return [_restore(kept) for kept in turn["attachments"]]


def load_options_of(turn: dict, current: LoadOptions) -> LoadOptions:
    """How the turn's attachments were read, with this run's password (never kept)."""
    known = {f.name for f in dataclasses.fields(LoadOptions)}
    kept = {k: v for k, v in turn.get("load", {}).items() if k in known and k not in NOT_KEPT}
    return LoadOptions(**kept, password=current.password)


def _keep(a: Attachment) -> dict:
    kept = {"source": a.source, "mime": a.mime, "sha256": a.sha256, "name": a.name}
    if a.path is not None:
        kept["path"] = str(Path(a.path).expanduser().resolve())
    else:
        kept["blob"] = a.sha256  # its bytes are written by save(), beside last.json
    return kept


def _restore(kept: dict) -> Attachment:
    label = kept["source"]
    if "path" in kept:
        path = Path(kept["path"])
        if not path.is_file():
            raise InputError(f"{label} (in the conversation -c continues) is gone from {path}; ask without -c "
                             "to start a new conversation")
        found = from_path(path, source=label)
        if found.sha256 != kept["sha256"]:
            raise InputError(f"{label} changed since the conversation -c continues was asked; ask without -c "
                             "to start a new conversation about it")
        return dataclasses.replace(found, mime=kept["mime"])  # (a GIF read as a video stays one)
    try:
        data = (state_dir() / "blobs" / kept["blob"]).read_bytes()
    except OSError:
        raise InputError(f"{label} (in the conversation -c continues) is no longer kept; ask without -c") from None
    return Attachment(source=label, mime=kept["mime"], sha256=kept["sha256"], data=data, name=kept.get("name", ""))


def _prune(blobs: Path, record: Record) -> None:
    """Drop kept bytes that the last conversation no longer uses."""
    if not blobs.is_dir():
        return
    used = {kept["blob"] for turn in record.turns for kept in turn["attachments"] if "blob" in kept}
    for blob in blobs.iterdir():
        if blob.name not in used:
            blob.unlink(missing_ok=True)
