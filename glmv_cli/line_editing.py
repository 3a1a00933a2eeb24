"""The chat prompt's line editing, as a shell's or Python's own prompt has it: Tab completes the
chat's /commands and the file after /attach or /save, the lines typed are kept across chats (Up
recalls the question of the last one) in $XDG_STATE_HOME/glmv/chat_history, unless
GLMV_NO_HISTORY=1, and a paste of several lines is one message (bracketed paste).

GNU readline or macOS's libedit, whichever Python was built with; plain input() where neither is.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

COMMANDS = ("/attach", "/reset", "/save", "/help", "/exit")
TAKES_A_PATH = ("/attach", "/save")
HISTORY_LINES = 1000


def candidates(line: str) -> list[str]:
    """The whole-line completions of `line`, what has been typed so far: a /command, or the file or
    folder (with its /) after /attach or /save. Questions complete to nothing."""
    if not line.startswith("/"):
        return []
    name, space, typed = line.partition(" ")
    if not space:
        return [command + " " for command in COMMANDS if command.startswith(name)]
    if name not in TAKES_A_PATH:
        return []
    return [f"{name} {path}" for path in _paths(typed.lstrip())]


def _paths(typed: str) -> list[str]:
    """Files and folders that start with `typed`, written as typed (~ stays ~); hidden ones only
    once a dot is typed, as in a shell."""
    expanded = os.path.expanduser(typed)
    found = []
    for path in sorted(glob.glob(glob.escape(expanded) + "*")):
        shown = typed + path[len(expanded):]
        found.append(shown + os.sep if os.path.isdir(path) else shown)
    return found


def shown(match: str) -> str:
    """How a completion is listed when there are several: the file's or folder's own name, or the
    command (not the whole line each time)."""
    path = match.partition(" ")[2]
    if not path:  # ("/attach ": a command)
        return match.strip()
    folder = path.endswith(os.sep)
    return os.path.basename(path.rstrip(os.sep)) + (os.sep if folder else "")


def start(history: Path | None, prompt: str = "") -> Callable[[], None]:
    """Tab completion on, and the kept lines read back; returns what keeps this chat's lines (call
    it once, when the chat ends). `prompt` is input()'s, drawn again under a list of completions.
    Does nothing where Python has no readline."""
    try:
        import readline
    except ImportError:
        return lambda: None
    readline.set_completer_delims("")  # (the completer sees the whole line: paths may hold spaces)
    readline.set_completer(lambda text, state: (candidates(text) + [None])[state])
    libedit = "libedit" in (readline.__doc__ or "") or getattr(readline, "backend", "") == "editline"
    readline.parse_and_bind("bind ^I rl_complete" if libedit else "tab: complete")
    if not libedit:  # (bracketed paste: Python turns it off, so a paste of several lines was as many messages)
        readline.parse_and_bind("set enable-bracketed-paste on")

        def listing(_substitution, matches, _longest):
            print("\n" + "  ".join(shown(m) for m in matches))
            print(prompt + readline.get_line_buffer(), end="", flush=True)

        readline.set_completion_display_matches_hook(listing)
    if history is None:
        return lambda: None
    readline.set_history_length(HISTORY_LINES)
    try:
        readline.read_history_file(history)
    except FileNotFoundError:
        pass
    except OSError as e:  # (unreadable: this chat starts without, and says why once)
        log.warning("chat history %s cannot be read (%s); starting without it", history, e)

    def keep() -> None:
        try:
            history.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(history)
        except OSError as e:
            log.warning("chat history %s cannot be written (%s)", history, e)

    return keep
