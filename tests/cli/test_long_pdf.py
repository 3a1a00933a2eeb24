"""Long PDFs through the real `glmv` process: the pages chosen for the question, `pages` in --json,
the one note on stderr, --pages, exit codes. The scripted checkpoint has a 4,096-token context, so
300 pages never fit; at --dpi 30 an A4 page costs ~120 tokens."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from tests.cli.conftest import glmv_env, run_glmv
from tests.cli.test_attachments import pptx_bytes
from tests.inputs.long_docs import write_long_pdf


@pytest.fixture(scope="module")
def long_pdf(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "report.pdf"
    return path, write_long_pdf(path, pages=300, facts=20, seed=2)


def _modes(pages: list[dict]) -> dict[str, int]:
    return {mode: sum(p["as"] == mode for p in pages) for mode in ("image", "text", "skipped")}


def test_pdf_json_reports_every_page_and_the_fact_page_is_shown(scripted, long_pdf):
    path, facts = long_pdf
    fact = facts[0]
    run = run_glmv("pdf", path, fact.question, "--model", scripted, "--dpi", "30", "--json")
    assert run.code == 0, run.err
    out = run.json
    pages = out["pages"]
    assert [p["page"] for p in pages] == list(range(1, 301))
    assert all(set(p) == ({"source", "page", "as", "dpi", "tokens"} if p["as"] == "image"
                          else {"source", "page", "as", "tokens"}) for p in pages)
    assert pages[fact.page - 1]["as"] == "image" and pages[fact.page - 1]["dpi"] == 30
    counts = _modes(pages)
    assert counts["image"] >= 3 and counts["skipped"] > 200
    assert out["usage"]["prompt_tokens"] <= 4096 and sum(p["tokens"] for p in pages) <= 4096
    assert 0 < out["usage"]["image_tokens"] < sum(p["tokens"] for p in pages if p["as"] == "image")
    note = [line for line in run.err.splitlines() if "do not fit" in line]
    assert len(note) == 1 and (f"{counts['image']} went in as images at 30 DPI, {counts['text']} as their text "
                               f"layer and {counts['skipped']} not at all") in note[0]
    assert "best matches for the question" in note[0] and out["answer"]


def test_pdf_without_a_question_spreads_the_pages_and_says_so(scripted, long_pdf):
    path, _ = long_pdf
    run = run_glmv("pdf", path, "--model", scripted, "--dpi", "30", "--jsonl")
    assert run.code == 0, run.err
    events = [json.loads(line) for line in run.out.splitlines()]
    notes = [e["message"] for e in events if e["type"] == "note"]
    assert len(notes) == 1 and "there is no question to rank the pages by" in notes[0]
    images = [p["page"] for p in events[-1]["pages"] if p["as"] == "image"]
    assert images[0] == 1 and images[-1] == 300


def test_ask_plans_an_attached_pdf_within_pages(scripted, long_pdf):
    path, facts = long_pdf
    fact = next(f for f in facts if 50 <= f.page <= 150)
    run = run_glmv("ask", path, fact.question, "--pages", "50-150", "--model", scripted, "--dpi", "30", "--json")
    assert run.code == 0, run.err
    pages = run.json["pages"]
    assert [p["page"] for p in pages] == list(range(50, 151)) and pages[fact.page - 50]["as"] == "image"


def test_short_pdf_has_no_planning_note_and_every_page_as_image(scripted, media):
    run = run_glmv("pdf", media["pdf"], "what is on it?", "--model", scripted, "--dpi", "72", "--json")
    assert run.code == 0, run.err
    assert [(p["page"], p["as"], p["dpi"]) for p in run.json["pages"]] == [(1, "image", 72), (2, "image", 72),
                                                                             (3, "image", 72)]
    assert "do not fit" not in run.err


def test_no_pdf_gives_an_empty_pages_list(scripted, media):
    run = run_glmv("ask", media["png"], "what is it?", "--model", scripted, "--json")
    assert run.code == 0 and run.json["pages"] == []


@pytest.mark.parametrize("args,message", [
    (["--pages", "290-310"], "page 310 is out of range: {name} has 300 pages"),
    (["--max-context", "200"], "not even one page fits"),
])
def test_bad_selections_exit_2_with_one_line(scripted, long_pdf, args, message):
    path, facts = long_pdf
    run = run_glmv("pdf", path, facts[0].question, "--model", scripted, "--dpi", "30", *args)
    assert run.code == 2 and message.format(name=path) in run.err
    assert "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1


def _fake_libreoffice(tmp_path, pdf) -> dict:
    """A stand-in `libreoffice` on PATH that 'converts' any deck by copying `pdf`."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "libreoffice"
    fake.write_text(f"""#!{sys.executable}
import shutil, sys
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("--outdir") + 1]); out.mkdir(parents=True, exist_ok=True)
shutil.copy({str(pdf)!r}, out / (Path(args[-1]).stem + ".pdf"))
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return glmv_env(PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_long_slide_decks_are_planned_and_read_by_map_reduce(scripted, long_pdf, tmp_path):
    path, facts = long_pdf
    env = _fake_libreoffice(tmp_path, path)
    deck = tmp_path / "deck.pptx"
    deck.write_bytes(pptx_bytes())
    run = run_glmv("pdf", deck, facts[1].question, "--model", scripted, "--dpi", "30", "--json", env=env)
    assert run.code == 0, run.err
    pages = run.json["pages"]
    assert len(pages) == 300 and pages[facts[1].page - 1]["as"] == "image" and pages[0]["source"] == str(deck)
    run = run_glmv("pdf", deck, "--pages", "1-40", "--map-reduce", "--model", scripted, "--dpi", "30", "--json",
                   env=env)
    assert run.code == 0, run.err
    assert [n for c in run.json["chunks"] for n in c["pages"]] == list(range(1, 41))


def test_c_reads_an_earlier_pdf_as_it_was_whatever_room_the_new_answer_asks(scripted, long_pdf, tmp_path):
    """A long PDF's pages are chosen for the answer room of the turn that attached it; -c with a
    different --max-new-tokens gives that turn its own room again: the same pages, the same prompt
    (all of it from the kept KV cache)."""
    path, facts = long_pdf
    env = glmv_env(XDG_STATE_HOME=str(tmp_path / "state"))
    first = run_glmv("pdf", path, facts[0].question, "--model", scripted, "--dpi", "30", "--json",
                     "--max-new-tokens", "20", env=env)
    assert first.code == 0, first.err
    again = run_glmv("ask", "-c", "And the year?", "--json", "--max-new-tokens", "1500", env=env)
    assert again.code == 0, again.err
    before, after = first.json["usage"], again.json["usage"]
    assert after["image_tokens"] == before["image_tokens"]  # (the same pages as images)
    assert after["cached_tokens"] >= before["prompt_tokens"]  # (the first prompt, token for token)
