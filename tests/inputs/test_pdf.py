"""PDF loading on PDFs written here with PyMuPDF: page selection, sizes and rotation, the token
budget (planned before rendering), encryption, broken files."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from glmv_cli.errors import InputError
from glmv_cli.inputs.image import preprocess_image
from glmv_cli.inputs.pages import parse_pages
from glmv_cli.inputs.patches import PatchSpec
from glmv_cli.inputs.pdf import (
    MAX_PAGE_PIXELS,
    MIN_DPI,
    image_cost,
    load_pdf,
    open_pdf,
    pixel_size,
    plan_pages,
    render_pages,
)
from tests.inputs.media import truncate, write_empty_pdf, write_pdf

SPEC = PatchSpec()  # GLM-4.1V's image preprocessor: max_pixels 9633792
A4 = (595.0, 842.0)
LETTER = (612.0, 792.0)
CONTEXT = 65536 - 8192  # GLM-4.1V's positions minus room for the answer


@pytest.mark.parametrize("spec,count,want", [
    (None, 3, (1, 2, 3)), ("all", 2, (1, 2)), ("", 2, (1, 2)), ("2", 5, (2,)),
    ("1-3,7", 9, (1, 2, 3, 7)), (" 4 , 2-3 ", 5, (4, 2, 3)), ("3-", 5, (3, 4, 5)), ("-2", 5, (1, 2)),
    ("2,2,1-2", 5, (2, 1)), ("5-5", 5, (5,)),
])
def test_parse_pages(spec, count, want):
    assert parse_pages(spec, count) == want


@pytest.mark.parametrize("spec,message", [
    ("1-3,x", r"bad page selection '1-3,x' at 'x': use numbers and ranges like 1-3,7"),
    ("1,,2", r"at '': use numbers"), ("-", r"at '-'"), ("1-2-3", r"at '1-2-3'"), ("1.5", r"at '1.5'"),
    ("0", r"pages count from 1, not 0"), ("0-2", r"pages count from 1"),
    ("4-2", r"the range 4-2 runs backwards; write 2-4"),
    ("3-12", r"page 12 is out of range: doc.pdf has 10 pages \(--pages 3-12\)"),
    ("11-", r"page 11 is out of range"), ("11", r"page 11 is out of range"),
])
def test_parse_pages_errors(spec, message):
    with pytest.raises(InputError, match=message):
        parse_pages(spec, 10, source="doc.pdf")


def test_selected_pages_in_order_with_text_and_progress(tmp_path):
    path = write_pdf(tmp_path / "doc.pdf", 5)
    calls = []
    doc = load_pdf(path, SPEC, pages="4,2-3", dpi=40, with_text=True, progress=lambda *a: calls.append(a))
    assert [p.number for p in doc.pages] == [4, 2, 3] and doc.page_count == 5
    assert [p.text.strip() for p in doc.pages] == ["page 4", "page 2", "page 3"]
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert all(p.visual.kind == "image" and p.visual.source == f"{path} page {p.number}" for p in doc.pages)
    assert load_pdf(path, SPEC, pages="1", dpi=40).pages[0].text is None
    assert not doc.plan.reduced and doc.plan.message == ""


def test_render_pages_gives_rgb_images_at_the_dpi(tmp_path):
    path = write_pdf(tmp_path / "doc.pdf", [A4, LETTER])
    first, second = render_pages(path, dpi=72)
    assert first.mode == "RGB" and first.size == (595, 842) and second.size == (612, 792)
    assert first.getpixel((100, 130)) == (0, 0, 255)  # the blue box, 100..~250 x 100..~205 pt
    assert render_pages(path, "2", dpi=144)[0].size == (1224, 1584)


def test_mixed_sizes_and_rotations(tmp_path):
    sizes = [A4, (842.0, 595.0), LETTER, (300.3, 500.7)]
    path = write_pdf(tmp_path / "mixed.pdf", sizes, rotations={0: 90, 2: 270, 3: 180})
    images = render_pages(path, dpi=100)
    got = [im.size for im in images]
    assert got[0] == (1170, 827)  # A4 portrait turned 90 degrees renders landscape
    assert got[1] == (1170, 827) and got[2] == (1100, 850) and got[3] == (418, 696)
    with open_pdf(path) as doc:  # the plan predicts every pixmap size exactly, at any DPI
        for dpi in (37, 72, 96, 100, 133, 180, 251):
            for k, page in enumerate(doc):
                pix = page.get_pixmap(dpi=dpi, alpha=False)
                assert pixel_size(page.rect, dpi) == (pix.width, pix.height), (k, dpi)
    loaded = load_pdf(path, SPEC, dpi=100)
    assert [p.visual.original_size for p in loaded.pages] == got
    assert loaded.plan.tokens == sum(p.visual.tokens_per_frame() + 2 for p in loaded.pages)


def test_a_poster_page_is_rendered_within_the_pixel_cap(tmp_path):
    """PDF's largest page (14400 pt, 200 inches) is 36000 px square at 180 DPI, a 3.9 GB pixmap that
    MuPDF refuses; it is rendered at the size the cap allows, and the plan still predicts it."""
    path = write_pdf(tmp_path / "poster.pdf", [(14400.0, 7200.0), A4])
    loaded = load_pdf(path, SPEC)
    poster, a4 = (p.visual.original_size for p in loaded.pages)
    assert poster[0] * poster[1] <= MAX_PAGE_PIXELS and poster[0] == pytest.approx(2 * poster[1], abs=2)
    assert a4 == pixel_size((0, 0, *A4), 180)  # pages within the cap keep their DPI
    assert loaded.plan.tokens == sum(p.visual.tokens_per_frame() + 2 for p in loaded.pages)


def test_token_cost_of_an_a4_page():
    assert image_cost(*pixel_size((0, 0, *A4), 180), SPEC) == 3975 + 2  # shared/reference/glm4v.md 11
    assert image_cost(*pixel_size((0, 0, *A4), 100), SPEC) == 1260 + 2
    assert image_cost(*pixel_size((0, 0, *A4), MIN_DPI), SPEC) == 1120 + 2


def test_budget_on_a_200_page_document(tmp_path):
    path = write_pdf(tmp_path / "long.pdf", 200)
    with open_pdf(path) as doc:
        with pytest.raises(InputError, match=(
                r"long\.pdf: 200 pages take 224400 tokens even at 96 DPI, more than the 57344 available; "
                r"choose fewer pages with --pages \(about 51 fit at 96 DPI\)")):
            plan_pages(doc, parse_pages(None, 200), SPEC, budget_tokens=CONTEXT, name="long.pdf")
        plan = plan_pages(doc, parse_pages("1-14", 200), SPEC, budget_tokens=CONTEXT)
        assert (plan.dpi, plan.tokens, plan.reduced) == (180, 14 * 3977, False)
        plan = plan_pages(doc, parse_pages("1-40", 200), SPEC, budget_tokens=CONTEXT, name="long.pdf")
        assert plan.reduced and plan.requested_dpi == 180 and plan.tokens <= CONTEXT
        assert plan.message == (f"long.pdf: 40 pages at 180 DPI take 159080 tokens, more than the 57344 "
                                f"available; rendering them at {plan.dpi} DPI ({plan.tokens} tokens)")
        above = plan_pages(doc, parse_pages("1-40", 200), SPEC, dpi=plan.dpi + 1)
        assert above.tokens > CONTEXT  # the highest DPI that fits
        assert plan_pages(doc, parse_pages("1-51", 200), SPEC, budget_tokens=CONTEXT).dpi == MIN_DPI
    # render a few pages under a budget that forces the reduction: the plan is what they cost
    small = load_pdf(path, SPEC, pages="7-8", budget_tokens=6000)
    assert small.plan.reduced and small.plan.tokens <= 6000 and small.plan.dpi >= 120
    assert small.plan.tokens == sum(p.visual.tokens_per_frame() + 2 for p in small.pages)
    assert [p.number for p in small.pages] == [7, 8]


def test_a_low_requested_dpi_is_never_raised(tmp_path):
    path = write_pdf(tmp_path / "doc.pdf", 3)
    with open_pdf(path) as doc:
        with pytest.raises(InputError, match="even at 50 DPI"):
            plan_pages(doc, (1, 2, 3), SPEC, dpi=50, budget_tokens=100)


def test_encrypted_pdf(tmp_path):
    path = write_pdf(tmp_path / "secret.pdf", 2, user_password="user-pw", owner_password="owner-pw")
    with pytest.raises(InputError, match=r"secret\.pdf is password-protected; give its password with --password"):
        load_pdf(path, SPEC)
    with pytest.raises(InputError, match=r"the password for .*secret\.pdf is wrong; check --password"):
        load_pdf(path, SPEC, password="guess")
    for password in ("user-pw", "owner-pw"):
        doc = load_pdf(path, SPEC, password=password, dpi=30, with_text=True)
        assert [p.text.strip() for p in doc.pages] == ["page 1", "page 2"]
    owner_only = write_pdf(tmp_path / "locked-edit.pdf", 1, owner_password="owner-pw")
    assert len(load_pdf(owner_only, SPEC, dpi=30).pages) == 1  # opens without a password


def test_pdf_from_bytes(tmp_path):
    data = write_pdf(tmp_path / "doc.pdf", 2).read_bytes()
    doc = load_pdf(data, SPEC, dpi=30, pages="2")
    assert doc.source == "stdin" and [p.number for p in doc.pages] == [2]


def test_missing_and_not_a_pdf(tmp_path):
    with pytest.raises(InputError, match=r"nope\.pdf: no such file"):
        load_pdf(tmp_path / "nope.pdf", SPEC)
    with pytest.raises(InputError, match="is a directory, not a PDF"):
        load_pdf(tmp_path, SPEC)
    junk = tmp_path / "junk.pdf"
    junk.write_text("this is not a pdf\n" * 20)
    with pytest.raises(InputError, match=r"junk\.pdf is not a PDF MuPDF can read .*re-download or re-export"):
        load_pdf(junk, SPEC)
    with pytest.raises(InputError, match="is not a PDF MuPDF can read"):
        load_pdf(b"", SPEC)


def test_truncated_pdf(tmp_path, caplog):
    whole = write_pdf(tmp_path / "whole.pdf", 6)
    head = truncate(whole, tmp_path / "head.pdf", 0.1)
    with pytest.raises(InputError, match=r"head\.pdf is not a PDF MuPDF can read"):
        load_pdf(head, SPEC)
    cut = truncate(whole, tmp_path / "cut.pdf", 0.6)  # xref table and later pages gone
    with caplog.at_level(logging.WARNING):
        doc = load_pdf(cut, SPEC, dpi=30, with_text=True)  # MuPDF rebuilds the xref, like viewers do
    assert "cut.pdf is damaged; MuPDF repaired it, some pages may be blank or incomplete" in caplog.text
    assert [p.text.strip() for p in doc.pages][:4] == ["page 1", "page 2", "page 3", "page 4"]
    assert "cut.pdf: page 6 may be incomplete (MuPDF: " in caplog.text


def test_zero_page_pdf(tmp_path):
    path = write_empty_pdf(tmp_path / "empty.pdf")
    with pytest.raises(InputError, match=r"empty\.pdf has no pages; nothing to show the model"):
        load_pdf(path, SPEC)


def test_pages_are_preprocessed_as_images(tmp_path):
    path = write_pdf(tmp_path / "doc.pdf", 1)
    page = load_pdf(path, SPEC, dpi=50).pages[0].visual
    image = render_pages(path, dpi=50)[0]
    same = preprocess_image(image, SPEC, source="x")
    assert page.grid_thw == same.grid_thw and np.array_equal(page.rows(), same.rows())
