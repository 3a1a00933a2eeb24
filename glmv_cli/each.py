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

from glmv_cli import render
from glmv_cli.app import attachments as att
from glmv_cli.app.ahead import Ahead
from glmv_cli.app.events import GenerationOptions
from glmv_cli.app.loaders import LoadOptions
from glmv_cli.errors import InputError


def label(item) -> str:
    return item.label if isinstance(item, att.Attachment) else str(item)


def run_each(items: list, question: str, model, load: LoadOptions, gen: GenerationOptions, out,
             parallel: int = 1) -> None:
    """Ask `question` about each of `items` in a fresh conversation of one session (`parallel` at once)."""
    from glmv_cli.app import history
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
    session.parallel = parallel  # (a RemoteSession: that many requests at once, for the server to batch)
    if note := getattr(session, "parallel_note", lambda: None)():
        render.note(note, term)
    makers = [lambda item=item: session.conversation(out.system).ask(question, [item], load=load, generation=gen)
              for item in items]
    with Ahead(makers, parallel) as asks:
        _render_all(items, asks, term, out, failed)
    history.not_kept("--each")  # (a -c after it says so, not continuing an older conversation)
    stats = session.glmv.batch_stats() if parallel > 1 and getattr(session, "glmv", None) else None
    if out.verbose and stats and stats["steps"]:
        term.line("", f"--parallel {parallel}: {stats['steps']} decode steps, {stats['rows'] / stats['steps']:.2f} "
                      f"answers in each on average", style="dim")
    if failed:
        raise InputError(f"{len(failed)} of {len(items)} inputs failed (their errors are above); "
                         f"the other answers are complete")


def _render_all(items: list, asks: Ahead, term: render.Terminal, out, failed: list) -> None:
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


def _report(term: render.Terminal, out, source: str, error: InputError) -> None:
    if out.json or out.jsonl:
        kind = {"type": "error"} if out.jsonl else {}
        term.write_out(json.dumps(kind | {"source": source, "error": str(error)}, ensure_ascii=False) + "\n")
    else:
        render.error(str(error), term)
