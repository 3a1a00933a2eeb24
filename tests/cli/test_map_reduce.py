"""--map-reduce through the real `glmv` process (and the app function in-process): every page read
once, in chunks of consecutive pages that fit the context, a progress line per chunk, the notes of
each pass in --json, and a last pass over the notes. The scripted checkpoint answers every pass
with its known script, so each chunk's notes are that answer."""

from __future__ import annotations

import json

import pytest

from glmv_cli.app.loaders import LoadOptions
from glmv_cli.app.map_reduce import map_options, map_reduce, reduce_prompt
from glmv_cli.app.session import Done, GenerationOptions, Progress, Session
from glmv_cli.errors import InputError
from tests.cli.conftest import run_glmv, slow_steps
from tests.cli.crafted import ANSWER
from tests.inputs.long_docs import write_long_pdf


@pytest.fixture(scope="module")
def long_pdf(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "contract.pdf"
    write_long_pdf(path, pages=60, facts=10, seed=3)
    return path


def _check_chunks(chunks: list[dict], pages: list[int]) -> None:
    assert [n for c in chunks for n in c["pages"]] == pages  # every page once, in order
    for c in chunks:
        assert c["pages"] == list(range(c["pages"][0], c["pages"][-1] + 1)) and c["notes"] == ANSWER


def test_map_reduce_json_has_chunks_pages_and_notes(scripted, long_pdf):
    run = run_glmv("pdf", long_pdf, "List every shipment from Porto", "--map-reduce", "--model", scripted,
                   "--dpi", "30", "--json")
    assert run.code == 0, run.err
    out = run.json
    assert len(out["chunks"]) >= 2 and out["answer"] == ANSWER
    _check_chunks(out["chunks"], list(range(1, 61)))
    assert [(p["page"], p["as"], p["dpi"]) for p in out["pages"]] == [(n, "image", 30) for n in range(1, 61)]


def test_map_reduce_progress_line_per_chunk_and_pages_option(scripted, long_pdf):
    run = run_glmv("pdf", long_pdf, "--map-reduce", "--pages", "10-45", "--model", scripted, "--dpi", "30",
                   "--jsonl")
    assert run.code == 0, run.err
    events = [json.loads(line) for line in run.out.splitlines()]
    chunks = events[-1]["chunks"]
    _check_chunks(chunks, list(range(10, 46)))
    progress = [e["message"] for e in events if e["type"] == "progress"]
    assert [m for m in progress if m.startswith("chunk") and m.count(":") == 1] == [
        f"chunk {k}/{len(chunks)}: pages {c['pages'][0]}-{c['pages'][-1]} of 60" for k, c in enumerate(chunks, 1)]
    assert f"answering from the notes of {len(chunks)} chunks" in progress


def test_the_last_pass_reads_every_chunks_notes(scripted, long_pdf):
    session = Session(scripted)
    events = list(map_reduce(session, "Summarize", str(long_pdf), load=LoadOptions(dpi=30)))
    result = next(e.result for e in events if isinstance(e, Done))
    runs = [tuple(c["pages"]) for c in result.chunks]
    prompt = reduce_prompt(str(long_pdf), runs, [c["notes"] for c in result.chunks], "Summarize")
    assert all(f"Pages {r[0]}-{r[-1]}:\n{ANSWER}" in prompt for r in runs)
    assert result.usage.prompt_tokens > len(session.tokenizer.encode(prompt)) > 0
    assert sum(isinstance(e, Progress) and e.message.startswith("chunk") and e.message.count(":") == 1
               for e in events) == len(runs)


def test_map_reduce_needs_a_pdf(scripted, media):
    with pytest.raises(InputError, match=r"--map-reduce reads a PDF or slides, and .*a\.png is image/png"):
        list(map_reduce(Session(scripted), "Summarize", str(media["png"])))


def test_notes_that_do_not_fit_the_last_pass_exit_2(scripted, long_pdf):
    """A 640-token context: one page per chunk, and the notes of 40 chunks outgrow the last pass."""
    run = run_glmv("pdf", long_pdf, "--map-reduce", "--pages", "1-40", "--model", scripted, "--dpi", "30",
                   "--max-context", "640")
    assert run.code == 2 and "do not fit the context for the last pass" in run.err and "--pages" in run.err
    assert "Traceback" not in run.err and run.out == ""


def test_chunk_passes_leave_room_for_notes_after_thinking(scripted):
    session = Session(scripted)  # 4,096 positions; its tokenizer has <think>, </think> and <answer>
    assert map_options(session, GenerationOptions()).max_new_tokens == 1024
    assert map_options(session, GenerationOptions()).think_budget == 512
    small = map_options(session, GenerationOptions(max_context=800))
    assert (small.max_new_tokens, small.think_budget) == (200, 100)
    mine = map_options(session, GenerationOptions(max_new_tokens=64, think_budget=0))
    assert (mine.max_new_tokens, mine.think_budget) == (64, 0)


def test_chunks_read_at_once_write_the_same_notes(tiny, long_pdf, monkeypatch):
    """--parallel 3: three chunks' passes at once (their notes decoded together, sampled with a
    seed) give the notes, pages and answer of one pass after another, and the progress lines in order."""
    load = LoadOptions(dpi=30, pages="1-24")
    gen = GenerationOptions(max_new_tokens=12, temperature=1.0, seed=5, max_context=1024)  # (own generators)

    def read(parallel):
        session = Session(tiny, dtype="float32", parallel=parallel)
        events = list(map_reduce(session, "Summarize", str(long_pdf), load=load, generation=gen))
        result = next(e.result for e in events if isinstance(e, Done))
        steps = session.glmv.batch_stats()
        return result, steps, [e.message for e in events if isinstance(e, Progress) and e.message.count(":") == 1]

    one, _, progress = read(1)
    slow_steps(monkeypatch)  # (a pass decodes longer than the next chunk's pages take to render)
    three, steps, progress3 = read(3)
    assert len(one.chunks) >= 4
    assert three.chunks == one.chunks and three.answer == one.answer and three.pages == one.pages
    assert progress3 == progress  # the progress lines in the same order
    assert steps["widest"] == 3 and steps["rows"] / steps["steps"] > 1.5
    lone = run_glmv("pdf", long_pdf, "--parallel", "2", "--model", tiny)
    assert lone.code == 2 and "goes with --map-reduce" in lone.err

