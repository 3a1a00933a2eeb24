"""--map-reduce: whole-document questions ("summarize", "list every deadline") over a long PDF.

The selected pages are cut into runs of consecutive pages that fit the context as images at the
chunk DPI (--dpi, else READABLE_DPI). One pass per chunk answers MAP_PROMPT: notes for the question,
with page numbers. One last pass answers the question from all the notes (REDUCE_PROMPT) and is
streamed like any answer. Events: a Progress line per chunk (the pass's own progress prefixed with
it), then the last pass's events; its Result gains `chunks` (the pages and notes of each pass) and
`pages` (every page, as the chunk passes showed it). With `session.parallel` N (--parallel), N
chunks' passes run at once, their notes decoded together (app/ahead.py, batching.py): the same
notes, sooner.

    for event in map_reduce(session, "List every deadline", "contract.pdf"): ...
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from glmv_cli.app import loaders
from glmv_cli.app.ahead import Ahead
from glmv_cli.app.attachments import Attachment, is_url, resolve
from glmv_cli.app.loaders import LoadOptions
from glmv_cli.app.session import Done, Event, GenerationOptions, Note, Progress, Session
from glmv_cli.errors import InputError

MAP_NEW_TOKENS = 1024  # notes per chunk, thinking included (see map_options)
MARGIN = 32  # tokens kept free in each chunk for rounding between the plan and the prompt
MAP_PROMPT = ("These are pages {first}-{last} of the {total} pages of {name}. Write short notes of everything "
              "on these pages that helps answer the question below, each with its page number. If nothing "
              "here helps, write: nothing relevant.\n\nQuestion: {question}")
REDUCE_PROMPT = ("Notes taken from {name}, read {chunks} parts at a time:\n\n{notes}\n\nFrom these notes, "
                 "answer: {question}")


def map_reduce(session: Session, question: str, attachment, *, system: str | None = None,
               load: LoadOptions | None = None, generation: GenerationOptions | None = None) -> Iterator[Event]:
    """Events of a map-reduce answer over one PDF or slides `attachment` (a path, URL, bytes, Attachment)."""
    load, gen = load or LoadOptions(), generation or GenerationOptions()
    if isinstance(attachment, str) and is_url(attachment):
        yield Progress(f"fetching {attachment}")
    att = resolve(attachment)
    if att.kind not in ("pdf", "slides"):
        raise InputError(f"--map-reduce reads a PDF or slides, and {att.label} is {att.mime}; ask without it")
    with tempfile.TemporaryDirectory(prefix="glmv-slides-") as tmp:
        if att.kind == "slides":
            yield Progress(f"converting {att.label} to PDF")
            att = dataclasses.replace(loaders.convert_to_pdf(att, Path(tmp)), source=att.source)
        yield from _map_then_reduce(session, question, att, system, load, gen)


def _map_then_reduce(session, question, att: Attachment, system, load, gen) -> Iterator[Event]:
    from glmv_cli.inputs.page_plan import READABLE_DPI

    load = dataclasses.replace(load, dpi=load.dpi or READABLE_DPI, query="", with_text=False)
    map_gen = map_options(session, gen)
    chunks, total = plan_chunks(session, att, question, load, map_gen)
    notes, pages = [], []

    def chunk_pass(run: tuple[int, ...]):
        prompt = MAP_PROMPT.format(first=run[0], last=run[-1], total=total, name=att.label, question=question)
        opts = dataclasses.replace(load, pages=f"{run[0]}-{run[-1]}")
        return session.conversation(system).ask(prompt, [att], load=opts, generation=map_gen)

    with Ahead([lambda run=run: chunk_pass(run) for run in chunks], getattr(session, "parallel", 1)) as passes:
        for k, run in enumerate(chunks, start=1):
            head = f"chunk {k}/{len(chunks)}: pages {run[0]}-{run[-1]} of {total}"
            yield Progress(head)
            result = yield from _quiet(passes.events(k - 1), head)
            notes.append(result.answer.strip() or result.thinking.strip() or "nothing relevant")
            pages += result.pages
    chunk_json = [{"pages": list(run), "notes": text} for run, text in zip(chunks, notes, strict=True)]
    final = session.conversation(system)
    prompt = reduce_prompt(att.label, chunks, notes, question)
    if final._limits(gen, prompt)[2] < 0:
        raise InputError(f"the notes of the {len(chunks)} chunks of {att.label} do not fit the context for the "
                         f"last pass; read fewer pages with --pages, or shorten each chunk's notes with "
                         f"--max-new-tokens")
    yield Progress(f"answering from the notes of {len(chunks)} chunks")
    for event in final.ask(prompt, [], generation=gen):
        if isinstance(event, Done):
            event = Done(dataclasses.replace(event.result, pages=pages, chunks=chunk_json))
        yield event


def map_options(session: Session, gen: GenerationOptions) -> GenerationOptions:
    """Each chunk's pass: MAP_NEW_TOKENS (at most a quarter of the context) unless --max-new-tokens
    is given; a thinking model thinks for at most half of them, so that it writes its notes. Notes
    are free text: an answer format (--schema, --choice) and --logprobs are for the last pass."""
    context = gen.max_context or session.config.text.max_position_embeddings
    new = gen.max_new_tokens or min(MAP_NEW_TOKENS, context // 4)
    thinks = all(session.tokenizer.token_id(t) is not None for t in ("<think>", "</think>", "<answer>"))
    budget = gen.think_budget if gen.think_budget is not None or not thinks else new // 2
    return dataclasses.replace(gen, max_new_tokens=new, think_budget=budget, format=None, logprobs=None)


def _quiet(events: Iterable[Event], head: str):
    """Run one chunk's pass: its progress prefixed with `head`, its text kept out of the output."""
    result = None
    for event in events:
        if isinstance(event, Progress):
            yield Progress(f"{head}: {event.message}", event.meter)
        elif isinstance(event, Note):
            yield Note(f"{head}: {event.message}")
        elif isinstance(event, Done):
            result = event.result
    return result


def reduce_prompt(name: str, chunks: list[tuple[int, ...]], notes: list[str], question: str) -> str:
    """The last pass's question: every chunk's notes under its page range, then the question."""
    parts = [f"Pages {run[0]}-{run[-1]}:\n{text}" for run, text in zip(chunks, notes, strict=True)]
    return REDUCE_PROMPT.format(name=name, chunks=len(chunks), notes="\n\n".join(parts), question=question)


def plan_chunks(session: Session, att: Attachment, question: str, load: LoadOptions,
                gen: GenerationOptions) -> tuple[list[tuple[int, ...]], int]:
    """Runs of consecutive selected pages that each fit one pass as images at load.dpi, and the
    document's page count."""
    from glmv_cli.inputs.page_plan import image_label
    from glmv_cli.inputs.pages import parse_pages
    from glmv_cli.inputs.patches import with_pixel_limits
    from glmv_cli.inputs.pdf import open_pdf, page_cost

    spec = with_pixel_limits(session.image_spec, min_pixels=load.min_pixels, max_pixels=load.max_pixels)
    prompt = MAP_PROMPT.format(first=99999, last=99999, total=99999, name=att.label, question=question)
    conversation = session.conversation()
    room = conversation._limits(gen, prompt)[2] - MARGIN
    source = att.read_bytes() if att.path is None else att.path
    chunks, run, used = [], [], 0
    with open_pdf(source, password=load.password, name=att.label) as doc:
        for n in parse_pages(load.pages, doc.page_count, source=att.label):
            cost = page_cost(doc, n, load.dpi, spec, att.label) + conversation._count(image_label(n)) + 1
            if cost > room:
                raise InputError(f"{att.label}: page {n} alone takes {cost} tokens at {load.dpi} DPI, more than "
                                 f"the {room} a pass has; lower --dpi or raise --max-context")
            if run and (used + cost > room or run[-1] != n - 1):
                chunks.append(tuple(run))
                run, used = [], 0
            run.append(n)
            used += cost
        chunks.append(tuple(run))
        return chunks, doc.page_count
