"""The only module that writes to the terminal.

stdout carries the answer and nothing else (plain text, box markers removed, one final newline),
streamed as it is generated. stderr carries everything for the human: the reasoning (dim on a
colour terminal), a transient status line while something slow runs (gone once text arrives),
notes and errors. With stderr not a terminal, or NO_COLOR set, or TERM=dumb: no escape codes at
all (the status line then uses a carriage return on a terminal and is left out elsewhere, unless
--verbose prints it as plain lines).

Three renderers share one interface, `handle(event)` + `finish()` / `interrupted()`:
TextRenderer (the default), JsonRenderer (--json: one object at the end) and JsonlRenderer
(--jsonl: one event per line as it happens).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from glmv_cli.app.events import Done, Note, Progress, Result
from glmv_cli.stream import Answer, Thinking
from glmv_cli.text import well_formed

# Control characters a model may emit (random or adversarial output): on a terminal they would move
# the cursor or change colours, so they are shown as U+FFFD there; pipes get the text unchanged.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.DOTALL | re.MULTILINE)
_OPEN_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n(.*)", re.DOTALL | re.MULTILINE)


def extract_code(text: str) -> str:
    """The first fenced code block's content; an unclosed fence runs to the end; no fence: all."""
    m = _FENCE.search(text) or _OPEN_FENCE.search(text)
    return m.group(2).rstrip("\n") if m else text


@dataclass
class Terminal:
    """The two streams and what they are attached to."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    verbose: bool = False

    def __post_init__(self):
        global _ACTIVE
        _ACTIVE = self  # where log records go (LogHandler)
        self.err_tty = _isatty(self.err)
        self.out_tty = _isatty(self.out)
        self.color = self.err_tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        self._console = None
        self._status = None  # a rich Status, or the text of a carriage-return status line
        self._err_open = self._out_open = False  # whether the last text written left its line open

    @property
    def console(self):
        """A Rich console on stderr (colour terminals only)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.err, highlight=False, soft_wrap=True)
        return self._console

    # -- stderr -------------------------------------------------------------------------------

    def status(self, message: str) -> None:
        """Show `message` as the transient status line (replacing the previous one)."""
        if self.color:
            if self._status is None:
                self._status = self.console.status(message, spinner="dots")
                self._status.start()
            else:
                self._status.update(message)
        elif self.err_tty:
            self.clear_status()
            line = message[: _width() - 2] + "…"
            self.err.write("\r" + line)
            self.err.flush()
            self._status = line
        elif self.verbose:
            self.err.write(f"glmv: {message}\n")
            self.err.flush()

    def progress(self, event: Progress) -> None:
        """The event's status line; with a meter, the same line with the share done and the time
        left as the step goes (4 times a second on a terminal, every 15 s in --verbose lines)."""
        self.status(event.message)
        if event.meter is not None and (self.err_tty or self.verbose):
            event.meter.watch(lambda m: self.status(f"{event.message}: {m.describe()}"),
                              every=0.25 if self.err_tty else 15.0)

    def clear_status(self) -> None:
        if self._status is None:
            return
        if isinstance(self._status, str):
            self.err.write("\r" + " " * len(self._status) + "\r")
            self.err.flush()
        else:
            self._status.stop()
        self._status = None

    def write_err(self, text: str, style: str | None = None) -> None:
        self.clear_status()
        if self.err_tty:
            text = _CONTROL.sub("\ufffd", text)
        if self.color and style:
            from rich.text import Text

            self.console.print(Text(text, style=style), end="")
        else:
            self.err.write(text)
        self.err.flush()
        if text:
            self._err_open = not text.endswith("\n")

    def line(self, prefix: str, message: str, style: str | None = None) -> None:
        """One whole line on stderr: 'glmv: note: ...', on a line of its own (after reasoning, or on a
        terminal an answer, cut short by an error)."""
        if self._out_open and self.out_tty and self.err_tty:
            self.write_out("\n")
        if self._err_open:
            self.write_err("\n")
        self.write_err(f"glmv: {prefix}" if prefix else "glmv: ", style=style)
        self.write_err(message + "\n")

    # -- stdout -------------------------------------------------------------------------------

    def write_out(self, text: str) -> None:
        self.clear_status()
        if self.out_tty:
            text = _CONTROL.sub("\ufffd", text)
        self.out.write(text)
        self.out.flush()
        if text:
            self._out_open = not text.endswith("\n")


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _width() -> int:
    import shutil

    return shutil.get_terminal_size((80, 24)).columns


_ACTIVE: Terminal | None = None


def _current() -> Terminal:
    """The last Terminal made, unless its streams were closed since (an embedding program or a test
    harness swapped them): then one on today's sys.stdout / sys.stderr."""
    term = _ACTIVE
    if term is None or getattr(term.err, "closed", False) or getattr(term.out, "closed", False):
        term = Terminal()
    return term


class LogHandler(logging.Handler):
    """Log records (library warnings, --debug) as 'glmv: ...' lines that first clear the status line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:  # noqa: BLE001  (logging must never raise)
            self.handleError(record)
            return
        term = _current()
        term.clear_status()
        term.line("", message)


def note(message: str, term: Terminal | None = None) -> None:
    """A line that tells the user something they may not expect (not a failure)."""
    (term or _current()).line("note: ", message, style="yellow")


def error(message: str, term: Terminal | None = None) -> None:
    """The one line every failure prints."""
    term = term or _current()
    term.clear_status()
    term.line("error: ", message, style="bold red")


class TextRenderer:
    """Reasoning to stderr as it comes, the answer to stdout as it comes (or, with `extract`, only
    its first fenced code block at the end)."""

    def __init__(self, term: Terminal, *, hide_reasoning: bool = False, extract: bool = False):
        self.term, self.hide_reasoning, self.extract = term, hide_reasoning, extract
        self.answer = ""  # what the answer holds so far
        self._err_open = False  # reasoning written without a final newline
        self._thought = False  # some reasoning was shown
        self._out_open = False  # answer written without a final newline

    def handle(self, event) -> None:
        if isinstance(event, Progress):
            self.term.progress(event)
        elif isinstance(event, Thinking):
            self.term.clear_status()
            if not self.hide_reasoning:
                self.term.write_err(event.text, style="dim")
                self._err_open = not event.text.endswith("\n")
                self._thought = True
        elif isinstance(event, Answer):
            self.term.clear_status()
            self._end_reasoning()
            self.answer += event.text
            if not self.extract:
                self.term.write_out(event.text)
                self._out_open = not event.text.endswith("\n")
        elif isinstance(event, Note):
            self._end_lines()
            note(event.message, self.term)
        elif isinstance(event, Done):
            self.finish(event.result)

    def _end_reasoning(self) -> None:
        """A blank line between the reasoning and the answer (both may share one terminal)."""
        if self._thought:
            self.term.write_err("\n" if self._err_open else "")
            if self.term.err_tty and self.term.out_tty:
                self.term.write_err("\n")
            self._thought = self._err_open = False

    def _end_lines(self) -> None:
        self.term.clear_status()
        if self._err_open:
            self.term.write_err("\n")
            self._err_open = False
        if self._out_open:
            self.term.write_out("\n")
            self._out_open = False

    def finish(self, result: Result | None = None) -> None:
        self._end_lines()
        if self.extract and self.answer.strip():
            self.term.write_out(extract_code(self.answer) + "\n")

    def interrupted(self) -> None:
        self._end_lines()
        self.term.line("", "stopped (Ctrl-C)", style="yellow")


class JsonRenderer:
    """--json: nothing on stdout until the end, then one JSON object (see Result.to_json), led by
    "source" when `source` is given (glmv ask --each)."""

    def __init__(self, term: Terminal, source: str | None = None):
        self.term, self.source = term, source

    def handle(self, event) -> None:
        if isinstance(event, Progress):
            self.term.progress(event)
        elif isinstance(event, Note):
            note(event.message, self.term)
        elif isinstance(event, Done):
            obj = ({"source": self.source} if self.source else {}) | event.result.to_json()
            self.term.write_out(json.dumps(obj, ensure_ascii=False) + "\n")

    def finish(self, result: Result | None = None) -> None:
        self.term.clear_status()

    def interrupted(self) -> None:
        self.term.clear_status()


class JsonlRenderer:
    """--jsonl: one JSON object per event, as it happens: progress, note, thinking, answer, done."""

    def __init__(self, term: Terminal):
        self.term = term

    def _emit(self, obj: dict) -> None:
        self.term.write_out(json.dumps(obj, ensure_ascii=False) + "\n")

    def handle(self, event) -> None:
        if isinstance(event, Progress):
            self._emit({"type": "progress", "message": event.message})
            if event.meter is not None:  # then the share done and the time left, every second or so
                event.meter.watch(lambda m, message=event.message: self._emit(
                    {"type": "progress", "message": message, "fraction": round(m.fraction, 4),
                     "seconds_left": None if m.seconds_left() is None else round(m.seconds_left(), 1)}), every=1.0)
        elif isinstance(event, Note):
            self._emit({"type": "note", "message": event.message})
        elif isinstance(event, Thinking):
            self._emit({"type": "thinking", "text": event.text})
        elif isinstance(event, Answer):
            self._emit({"type": "answer", "text": event.text, "boxed": event.boxed})
        elif isinstance(event, Done):
            self._emit({"type": "done", **event.result.to_json()})

    def finish(self, result: Result | None = None) -> None:
        pass

    def interrupted(self) -> None:
        self._emit({"type": "interrupted"})


def make_renderer(term: Terminal, *, json_: bool = False, jsonl: bool = False, hide_reasoning: bool = False,
                  extract: bool = False, source: str | None = None):
    if json_:
        return JsonRenderer(term, source)
    if jsonl:
        return JsonlRenderer(term)
    return TextRenderer(term, hide_reasoning=hide_reasoning, extract=extract)


# -- chat ---------------------------------------------------------------------------------------

QUOTES = '"""'  # a chat message of several lines goes between two of these


class ChatScreen:
    """The chat loop's own terminal needs: the input prompt and short messages."""

    def __init__(self, term: Terminal, stdin: TextIO | None = None, history: Path | None = None):
        """`history`: where the lines typed are kept across chats (None: not kept)."""
        self.term = term
        self.stdin = stdin or sys.stdin
        self.interactive = _isatty(self.stdin)
        self.close = lambda: None  # (keeps the lines typed, once the chat ends)
        self.block = False  # whether the last message read was a \"\"\" block
        if self.interactive:
            from glmv_cli import line_editing

            self.close = line_editing.start(history, self.prompt)  # Tab completion, Up for earlier lines

    def welcome(self, model: str, attached: list[str]) -> None:
        if not self.interactive:
            return
        self.info(f"chatting with {model}; /help for commands, Ctrl-C stops an answer, Ctrl-D leaves")
        for name in attached:
            self.info(f"attached {name} to your first message")

    def read(self) -> str:
        """One message: a line, or the lines between a \"\"\" and the next (as ollama's prompt takes
        them; a paste of several lines is one message already, by the terminal's bracketed paste).
        EOFError at the end (Ctrl-D), KeyboardInterrupt on Ctrl-C (a half-typed block is dropped).
        `self.block` says whether it was a block: a block is always a message, never a /command."""
        self.block = False
        line = self._line(self.prompt)
        if not line.lstrip().startswith(QUOTES):
            return line
        self.block = True
        first = line.lstrip()[len(QUOTES):]
        if first.rstrip().endswith(QUOTES):
            return first.rstrip()[:-len(QUOTES)]
        lines = [first]
        while True:
            try:
                more = self._line(self.prompt_more)
            except EOFError:  # (Ctrl-D, or the end of a pipe, closes the block: nothing typed is lost)
                break
            if more.rstrip().endswith(QUOTES):
                lines.append(more.rstrip()[:-len(QUOTES)])
                break
            lines.append(more)
        return "\n".join(lines).strip("\n")

    def _line(self, prompt: str) -> str:
        """(A byte the locale cannot decode, which Python reads as a lone surrogate, is U+FFFD.)"""
        if not self.interactive:
            line = self.stdin.readline()
            if not line:
                raise EOFError
            return well_formed(line.rstrip("\n"))
        self.term.clear_status()
        return well_formed(input(prompt))

    @property
    def prompt(self) -> str:
        return "\001\x1b[1;36m\002>>> \001\x1b[0m\002" if self.term.color else ">>> "

    @property
    def prompt_more(self) -> str:
        return "\001\x1b[1;36m\002... \001\x1b[0m\002" if self.term.color else "... "

    @contextmanager
    def busy(self):
        """While the model works, keys typed ahead are not echoed into its output (they stay
        buffered for the next prompt); Ctrl-C still interrupts."""
        try:
            import termios
        except ImportError:  # Windows
            termios = None
        saved = None
        if termios is not None and self.interactive:
            try:
                fd = self.stdin.fileno()
                saved = termios.tcgetattr(fd)
            except (termios.error, OSError, ValueError, AttributeError):
                saved = None
        if saved is None:
            yield
            return
        quiet = list(saved)
        quiet[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
        try:
            yield
        finally:
            termios.tcsetattr(fd, termios.TCSANOW, saved)

    def info(self, message: str) -> None:
        self.term.write_err(message + "\n", style="cyan")

    def blank(self) -> None:
        if self.interactive:
            self.term.write_err("\n")
