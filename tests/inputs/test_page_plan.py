"""Long PDFs (hundreds of pages written here with PyMuPDF, facts on known pages, scans without a text
layer): which pages go in as images, as text or not at all, within the budget, in document order."""

from __future__ import annotations

import pytest

from glmv_cli.app.attachments import from_path
from glmv_cli.app.loaders import LoadOptions
from glmv_cli.app.loaders import load_pdf as load_attachment
from glmv_cli.errors import InputError
from glmv_cli.inputs import pdf as pdf_module
from glmv_cli.inputs.page_plan import (
    IMAGE_SHARE,
    READABLE_DPI,
    extract_texts,
    plan_document,
    priority,
    spread_order,
)
from glmv_cli.inputs.pages import parse_pages
from glmv_cli.inputs.patches import PatchSpec
from glmv_cli.inputs.pdf import load_pdf, open_pdf
from glmv_cli.inputs.visual import VisualInput
from tests.inputs.long_docs import scan, write_long_pdf
from tests.inputs.media import write_pdf

SPEC = PatchSpec()
CONTEXT = 65536 - 8192 - 64  # GLM-4.1V's 64k positions, less the answer's room and the template's


@pytest.fixture(scope="module")
def long_pdf(tmp_path_factory):
    """300 A4 pages of 8-point text; 200 facts on known pages."""
    path = tmp_path_factory.mktemp("long") / "report.pdf"
    return path, write_long_pdf(path, pages=300, facts=200, seed=1)


def test_spread_order_starts_with_the_ends_and_halves_the_gaps():
    assert spread_order(0) == [] and spread_order(1) == [0] and spread_order(2) == [0, 1]
    assert spread_order(9) == [0, 8, 4, 2, 6, 1, 3, 5, 7]
    for n in (3, 10, 101, 300):
        order = spread_order(n)
        assert sorted(order) == list(range(n))
        first = sorted(order[:5])  # any prefix is spread: gaps differ by at most a factor of ~2
        gaps = [b - a for a, b in zip(first, first[1:], strict=False)]
        assert first[0] == 0 and first[-1] == n - 1 and max(gaps) <= 2 * min(gaps) + 1


def test_the_fact_page_goes_in_as_an_image_within_the_budget(long_pdf):
    path, facts = long_pdf
    fact = facts[0]
    with open_pdf(path) as doc:
        plan = plan_document(doc, parse_pages(None, 300), SPEC, dpi=180, budget_tokens=CONTEXT,
                             question=fact.question, name="report.pdf")
    assert [p.number for p in plan.pages] == list(range(1, 301))  # every page, in document order
    by_page = {p.number: p for p in plan.pages}
    assert by_page[fact.page].mode == "image" and by_page[fact.page].dpi == 180
    images = [p for p in plan.pages if p.mode == "image"]
    assert sum(p.tokens for p in images) <= CONTEXT * IMAGE_SHARE < sum(p.tokens for p in images) + 3977 + 10
    assert sum(p.tokens for p in plan.pages) <= CONTEXT
    assert plan.count("text") > 0 and plan.count("skipped") > 0
    assert all(p.tokens == 0 and p.dpi is None for p in plan.pages if p.mode == "skipped")
    assert plan.render.pages == tuple(p.number for p in images) and plan.render.dpi == 180
    assert plan.message == (
        f"report.pdf: 300 pages do not fit the {CONTEXT} tokens left at a readable DPI; {len(images)} went in "
        f"as images at 180 DPI, {plan.count('text')} as their text layer and {plan.count('skipped')} not at all; "
        f"pages chosen as the best matches for the question by their text; name the pages with --pages, use "
        f"--map-reduce to read them all, or allow fewer new tokens (--max-new-tokens) to leave more room")


def test_recall_of_the_fact_page_over_200_questions(long_pdf):
    """The selector's recall at the default budget of a 64k context: the fact page goes in (as an
    image or as its text layer) for >= 95% of 200 question / fact pairs, as an image for >= 85%.
    Text is counted by its UTF-8 bytes here, an upper bound: the real tokenizer sends more text."""
    path, facts = long_pdf
    numbers = parse_pages(None, 300)
    as_image = sent = 0
    with open_pdf(path) as doc:
        texts = extract_texts(doc, numbers)
        for fact in facts:
            plan = plan_document(doc, numbers, SPEC, dpi=180, budget_tokens=CONTEXT - len(fact.question),
                                 question=fact.question, texts=texts)
            mode = plan.pages[fact.page - 1].mode
            as_image += mode == "image"
            sent += mode != "skipped"
    print(f"recall of the fact page over {len(facts)} questions: as image {as_image / len(facts):.1%}, "
          f"sent at all {sent / len(facts):.1%}")
    assert len(facts) >= 200 and sent / len(facts) >= 0.95 and as_image / len(facts) >= 0.85


def test_ties_keep_document_order_and_no_match_spreads_evenly(tmp_path):
    path = write_pdf(tmp_path / "same.pdf", 9)  # "page N" on every page: the same words
    with open_pdf(path) as doc:
        texts = extract_texts(doc, tuple(range(1, 10)))
        order, why = priority(tuple(range(1, 10)), texts, "which page?")
        assert order == list(range(1, 10)) and why.startswith("the best matches")
        order, why = priority(tuple(range(1, 10)), texts, "the colour of the zebra")
        assert order == [1, 9, 5, 3, 7, 2, 4, 6, 8]
        assert why == "spread evenly over the document: the question matches no page's text"


def test_without_a_question_pages_are_spread_evenly(long_pdf):
    path, _ = long_pdf
    with open_pdf(path) as doc:
        plan = plan_document(doc, parse_pages(None, 300), SPEC, dpi=180, budget_tokens=CONTEXT, question="")
    images = [p.number for p in plan.pages if p.mode == "image"]
    assert images[0] == 1 and images[-1] == 300 and len(images) >= 5
    gaps = [b - a for a, b in zip(images, images[1:], strict=False)]
    assert max(gaps) <= 2 * min(gaps) + 1
    texts = [p.number for p in plan.pages if p.mode == "text"]
    assert texts and max(b - a for a, b in zip(texts, texts[1:], strict=False)) <= 300 // len(texts) * 2 + 2
    assert "spread evenly over the document: there is no question to rank the pages by" in plan.message


def test_a_scan_without_text_layer_spreads_the_whole_budget_over_images(long_pdf, tmp_path):
    path, facts = long_pdf
    scanned = scan(path, tmp_path / "scan.pdf")
    with open_pdf(scanned) as pdf:
        plan = plan_document(pdf, parse_pages(None, 300), SPEC, dpi=180, budget_tokens=CONTEXT,
                             question=facts[0].question, name="scan.pdf")
    modes = [p.mode for p in plan.pages]
    used = sum(p.tokens for p in plan.pages)
    assert "text" not in modes and used <= CONTEXT < used + 3977 + 10  # the whole budget, at 180 DPI
    images = [p.number for p in plan.pages if p.mode == "image"]
    assert images[0] == 1 and images[-1] == 300 and plan.render.pages == tuple(images)
    assert "it has no text layer to rank the pages by (a scan?)" in plan.message
    doc = load_pdf(scanned, SPEC, pages="1-40", budget_tokens=4000, question=facts[0].question, dpi=72)
    shown = [p.number for p in doc.pages]  # 632 tokens a page at 72 DPI: 6 fit in 4000
    assert len(shown) == 6 and shown[0] == 1 and shown[-1] == 40 and all(p.text is None for p in doc.pages)


def test_pages_option_plans_within_the_selection(long_pdf):
    path, facts = long_pdf
    inside = next(f for f in facts if 100 <= f.page <= 250)
    outside = next(f for f in facts if f.page < 100)
    doc = load_pdf(path, SPEC, pages="100-250", budget_tokens=CONTEXT, question=inside.question, dpi=150)
    assert [p.number for p in doc.layout] == list(range(100, 251))
    assert {p.number: p for p in doc.layout}[inside.page].mode == "image"
    assert all(p.dpi == 150 for p in doc.layout if p.mode == "image")  # --dpi sets the chosen pages' DPI
    doc = load_pdf(path, SPEC, pages="100-250", budget_tokens=CONTEXT, question=outside.question)
    assert outside.page not in [p.number for p in doc.layout]


def test_pages_that_fit_at_a_readable_dpi_all_go_in_as_images(long_pdf):
    path, _ = long_pdf
    doc = load_pdf(path, SPEC, pages="1-6", budget_tokens=6 * 2600, question="anything")
    assert [p.mode for p in doc.layout] == ["image"] * 6
    assert READABLE_DPI <= doc.plan.dpi < 180 and "rendering them at" in doc.message


def test_only_the_pages_sent_as_images_are_rendered(long_pdf, monkeypatch):
    path, facts = long_pdf
    rendered, real = [], pdf_module.render_page
    monkeypatch.setattr(pdf_module, "render_page",
                        lambda doc, n, dpi, **kw: rendered.append(n) or real(doc, n, dpi, **kw))
    progress = []
    doc = load_pdf(path, SPEC, budget_tokens=CONTEXT, question=facts[3].question,
                   progress=lambda done, total: progress.append((done, total)))
    images = [p.number for p in doc.layout if p.mode == "image"]
    assert rendered == images and progress[-1] == (len(images), len(images))


def test_the_prompt_labels_every_page_in_document_order(long_pdf):
    path, facts = long_pdf
    fact = facts[5]
    loaded = load_attachment(from_path(path), SPEC, LoadOptions(query=fact.question), CONTEXT)
    labels = []
    for k, part in enumerate(loaded.parts):
        if isinstance(part, VisualInput):
            assert loaded.parts[k - 1] == f"Page {int(part.source.rsplit(' ', 1)[1])}:"
            labels.append(int(part.source.rsplit(" ", 1)[1]))
        elif part.startswith("Page ") and "(text layer only)" in part:
            labels.append(int(part.split()[1]))
    assert labels == sorted(labels) and fact.page in labels
    text_pages = [p for p in loaded.parts if isinstance(p, str) and "(text layer only)" in p]
    assert text_pages and all(f"Annual logistics report, page {p.split()[1]}\n" in p for p in text_pages)
    assert [p["page"] for p in loaded.pages] == list(range(1, 301))
    assert all(p["source"] == str(path) for p in loaded.pages)
    assert set(labels) == {p["page"] for p in loaded.pages if p["as"] != "skipped"}


def test_with_text_adds_the_text_of_image_pages_within_the_budget(long_pdf):
    path, facts = long_pdf
    doc = load_pdf(path, SPEC, budget_tokens=CONTEXT, question=facts[0].question, with_text=True)
    images = [p for p in doc.pages if p.visual is not None]
    assert images and all(p.text and "page" in p.text for p in images)
    assert sum(p.tokens for p in doc.layout) <= CONTEXT


def test_a_budget_too_small_for_any_page_is_an_input_error(long_pdf):
    path, facts = long_pdf
    with pytest.raises(InputError, match=r"report\.pdf: not even one page fits the 5 tokens left .*--max-context"):
        load_pdf(path, SPEC, budget_tokens=5, question=facts[0].question, name="report.pdf")


def test_a_text_layer_loses_its_control_characters():
    """Glyphs a PDF's font maps to no character come out of PyMuPDF as NULs (141 on one page of
    CJK and emoji text): they would fill the prompt's text budget with nothing."""
    import pymupdf

    from glmv_cli.inputs.page_plan import page_text

    doc = pymupdf.open()
    doc.new_page().insert_text((50, 60), "math \u2211\u222b ok\tthen\nnext line")
    assert page_text(doc[0]) == doc[0].get_text().strip()  # (nothing to remove: unchanged)

    class Unmapped:  # (what PyMuPDF gave for such a page)
        def get_text(self):
            return "math \u2211\u222b \x00\x00\x00\x00 ok\tthen\x0c\nnext\x7f line\n"

    assert page_text(Unmapped()) == "math \u2211\u222b  ok\tthen\nnext line"
