"""A real terminal for display tests: a tmux server of our own (private socket, no user config)
running bash, driven with send-keys and read with capture-pane."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.cli.conftest import glmv_env

TMUX = shutil.which("tmux")


class Tmux:
    def __init__(self, cwd: Path, width: int = 120, height: int = 40, **env: str):
        self.socket = f"glmv-test-{uuid.uuid4().hex[:8]}"
        bindir = os.path.dirname(sys.executable)  # the venv's `glmv` script
        base = glmv_env(**env)
        base.pop("TERM", None)  # tmux sets its own
        base["PATH"] = f"{bindir}{os.pathsep}{base.get('PATH', '')}"
        base.setdefault("LANG", "C.UTF-8")
        args = [f"-e{k}={v}" for k, v in base.items() if k in _PASS or k in env]
        self._tmux("-f", "/dev/null", "new-session", "-d", "-x", str(width), "-y", str(height), "-s", "t",
                   "-c", str(cwd), *args, "bash --norc --noprofile")
        # -echoctl: the tty itself would echo Ctrl-C as "^C" wherever the cursor is (a race with
        # glmv's output); glmv's own reaction to Ctrl-C is what the tests look at.
        self.type("PS1='$ '; stty -echoctl; clear")
        self.wait_for_shell()

    def _tmux(self, *args: str) -> str:
        done = subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=30)
        if done.returncode:
            raise RuntimeError(f"tmux {' '.join(args)}: {done.stderr}")
        return done.stdout

    def type(self, text: str, enter: bool = True) -> None:
        self._tmux("send-keys", "-t", "t", "-l", text)
        if enter:
            self._tmux("send-keys", "-t", "t", "Enter")

    def paste(self, path: Path) -> None:
        """The file's text pasted as a terminal pastes (bracketed, where the program asked for it)."""
        self._tmux("load-buffer", str(path))
        self._tmux("paste-buffer", "-p", "-d", "-t", "t")

    def key(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def screen(self, escapes: bool = False) -> str:
        """The visible pane; with `escapes`, tmux's rendition of colours and attributes (SGR)."""
        return self._tmux("capture-pane", "-p", "-t", "t", *(["-e"] if escapes else []))

    def wait_for(self, text: str, timeout: float = 90, gone: bool = False) -> str:
        """Poll the screen until `text` shows (or, with gone=True, no longer shows)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if (text in screen) != gone:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{'still' if gone else 'never'} saw {text!r} on the screen:\n{screen}")
            time.sleep(0.1)

    def wait_for_count(self, text: str, count: int, timeout: float = 60) -> str:
        """Poll the screen until `text` shows `count` times (the second answer of a chat, ...)."""
        deadline = time.monotonic() + timeout
        while (screen := self.screen()).count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"never saw {text!r} {count} times on the screen:\n{screen}")
            time.sleep(0.1)
        return screen

    def exit_code(self, timeout: float = 90) -> int:
        """Run `echo rc=$?` and read the number back (the last command's exit status)."""
        pattern = re.compile(r"^rc=(\d+)\s*$", re.MULTILINE)
        before = len(pattern.findall(self.screen()))
        self.type("echo rc=$?")
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.findall(self.screen())
            if len(found) > before:
                return int(found[-1])
            if time.monotonic() > deadline:
                raise AssertionError("no exit status on the screen:\n" + self.screen())
            time.sleep(0.1)

    def wait_for_shell(self, timeout: float = 90) -> str:
        """Until the command has finished: the last non-empty line is the bare shell prompt."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.screen().splitlines() if line.strip()]
            if lines and lines[-1].rstrip() == "$":
                return self.screen()
            if time.monotonic() > deadline:
                raise AssertionError("the command did not finish:\n" + self.screen())
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


# what the shell in tmux inherits from glmv_env (not the whole environment)
_PASS = {"PATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "no_proxy",
         "NO_PROXY", "HF_HUB_CACHE", "XDG_STATE_HOME"}
