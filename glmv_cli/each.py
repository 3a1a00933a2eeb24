"""`glmv ask FILES... QUESTION --each`: the same question about each attachment on its own, with
one model load, where a shell loop would load the model once per file (captions for a folder of
photos, one field from each invoice).

Text: a `==> FILE <==` line before each answer on stdout, as `head` and `tail` mark several files;
the reasoning goes to stderr as usual. --json: one object per line, each with its "source";
--jsonl: a {"type": "source"} event before each input's events. An input that fails (a corrupt
file) gets its one-line error, or {"source": ..., "error": ...} with --json, and the others still
get their answers; the exit code is then 2, as for any bad input. A model that cannot load, or a
server that cannot be reached (--backend openai), stops them all.

--parallel N: N attachments are answered at once on N threads, their tokens decoded together
(batching.py; with --backend openai, N requests at once for the server to batch). The output is
what it is without: each answer printed in order, the first one streamed as it is generated and the
ones after it as soon as their turn comes.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator

from glmv_cli import render
from glmv_cli.app import attachments as att
from glmv_cli.app.events import GenerationOptions
from glmv_cli.app.loaders import LoadOptions
from glmv_cli.errors import InputError


def label(item) -> str:
    return item.label if isinstance(item, att.Attachment) else str(item)


def run_each(items: list, question: str, model, load: LoadOptions, gen: GenerationOptions, out,
             parallel: int = 1) -> None:
    """Ask `question` about each of `items` in a fresh conversation of one session (`parallel` at once)."""
    from glmv_cli.commands import open_session, query_for

    if not items:
        raise InputError("--each asks about each attachment in turn; give files, e.g. glmv ask *.jpg 'caption' --each")
    if out.draw_boxes:
        raise InputError("--draw-boxes draws on one image; leave out --each")
    load = query_for(question, load)
    term = render.Terminal(verbose=out.verbose)
    term.status(f"opening {model.model or 'the model'}")
    try:
        session = open_session(model)
    finally:
        term.clear_status()
    failed: list[InputError] = []
    if parallel > 1 and hasattr(session, "parallel"):  # (a RemoteSession: the server batches)
        session.parallel = parallel
    asks = Asks(session, items, question, load, gen, out.system, parallel)
    try:
        _render_all(items, asks, term, out, failed)
    finally:
        asks.stop()
    stats = session.glmv.batch_stats() if parallel > 1 and getattr(session, "glmv", None) else None
    if out.verbose and stats and stats["steps"]:
        term.line("", f"--parallel {parallel}: {stats['steps']} decode steps, {stats['rows'] / stats['steps']:.2f} "
                      f"answers in each on average", style="dim")
    if failed:
        raise InputError(f"{len(failed)} of {len(items)} inputs failed (their errors are above); "
                         f"the other answers are complete")


def _render_all(items: list, asks: Asks, term: render.Terminal, out, failed: list) -> None:
    for k, item in enumerate(items):
        source = label(item)
        renderer = render.make_renderer(term, json_=out.json, jsonl=out.jsonl, hide_reasoning=out.hide_reasoning,
                                        extract=out.extract, source=source)
        if out.jsonl:
            term.write_out(json.dumps({"type": "source", "source": source}, ensure_ascii=False) + "\n")
        elif not out.json:
            term.write_out(("\n" if k else "") + f"==> {source} <==\n")
        try:
            for event in asks.events(k):
                renderer.handle(event)
        except KeyboardInterrupt:
            renderer.interrupted()
            raise
        except InputError as e:  # this input's fault; a model or server failure (other GlmvErrors) stops all
            failed.append(e)
            _report(term, out, source, e)
        finally:
            term.clear_status()


_END = object()


class Asks:
    """The question asked about each item in its own conversation: lazily one after another, or
    with `parallel` > 1 on that many threads ahead of the reader, each item's events queued for it."""

    def __init__(self, session, items: list, question: str, load: LoadOptions, gen: GenerationOptions,
                 system: str | None, parallel: int):
        self.session, self.items, self.question, self.load, self.gen = session, items, question, load, gen
        self.system, self.parallel = system, parallel
        self._queues = [queue.Queue() for _ in items]
        self._next = 0
        self._lock, self._stopped = threading.Lock(), threading.Event()
        if parallel > 1:
            for i in range(min(parallel, len(items))):
                threading.Thread(target=self._work, name=f"glmv-each-{i}", daemon=True).start()

    def _ask(self, k: int) -> Iterator:
        return self.session.conversation(self.system).ask(self.question, [self.items[k]], load=self.load,
                                                          generation=self.gen)

    def events(self, k: int) -> Iterator:
        """Item k's events (raising what its question raised)."""
        if self.parallel <= 1:
            yield from self._ask(k)
            return
        while (event := self._queues[k].get()) is not _END:
            if isinstance(event, BaseException):
                raise event
            yield event

    def _work(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                k, self._next = self._next, self._next + 1
            if k >= len(self.items):
                return
            events = None
            try:
                events = self._ask(k)
                for event in events:
                    if self._stopped.is_set():
                        break
                    self._queues[k].put(event)
            except BaseException as e:  # noqa: BLE001  (raised in the reader's thread, in its turn)
                self._queues[k].put(e)
            finally:
                if events is not None:
                    events.close()  # (stopped early: the generation ends at its next token)
                self._queues[k].put(_END)

    def stop(self) -> None:
        """No more questions (all answered, Ctrl-C, or a failure that stops them all)."""
        self._stopped.set()


def _report(term: render.Terminal, out, source: str, error: InputError) -> None:
    if out.json or out.jsonl:
        kind = {"type": "error"} if out.jsonl else {}
        term.write_out(json.dumps(kind | {"source": source, "error": str(error)}, ensure_ascii=False) + "\n")
    else:
        render.error(str(error), term)
