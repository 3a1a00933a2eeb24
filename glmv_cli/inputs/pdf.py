"""PDF files -> one image VisualInput per selected page (plus its text layer), within a token budget.

Pages are rendered with PyMuPDF at a DPI (180 by default) to RGB and preprocessed like any image.
Before anything is rendered, `plan_pages` prices the selection from the page sizes alone: a page
of W x H pixels costs smart_resize(W, H) / 14^2 / 2^2 <|image|> placeholders plus its
<|begin_of_image|> and <|end_of_image|>. When the selection does not fit `budget_tokens`, every
page is rendered at the highest common DPI that fits, down to MIN_DPI; below that the user is
asked to pick fewer pages.

`load_pdf` plans with inputs/page_plan.py: when the pages do not fit at a readable DPI (120) it
chooses the pages for the question instead (best as images, next as their text layer, the rest
left out) and renders only the image pages.

MIN_DPI = 96: at 96 DPI 10-point body text is ~13 px high (x-height ~6 px), what a desktop screen
shows at 100% zoom and about one 14 px patch per line, the smallest size at which the model still
reads running text reliably; an A4 page then costs 1,122 tokens (vs 3,977 at 180 DPI).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from glmv_cli.errors import InputError
from glmv_cli.inputs.image import preprocess_image
from glmv_cli.inputs.mupdf import quiet
from glmv_cli.inputs.pages import parse_pages
from glmv_cli.inputs.patches import PatchSpec, smart_resize
from glmv_cli.inputs.visual import VisualInput

log = logging.getLogger(__name__)

DEFAULT_DPI = 180
# A page larger than this at its DPI (a 14400-point poster is 36000 px square at 180 DPI) is rendered
# smaller: the model sees at most max_pixels (9.6 MP by default) of it anyway.
MAX_PAGE_PIXELS = 40_000_000
MIN_DPI = 96
MARKER_TOKENS = 2  # <|begin_of_image|> and <|end_of_image|> around each page


@dataclass(frozen=True)
class RenderPlan:
    """What rendering the selection will do: one DPI for all pages and what that costs.

    pages: 1-based page numbers in the order shown to the model.
    tokens: LLM positions of all pages together (placeholders + begin/end markers).
    message: "" when the requested DPI fits, else one line saying what was lowered (for stderr).
    """

    pages: tuple[int, ...]
    dpi: int
    requested_dpi: int
    tokens: int
    budget_tokens: int | None = None
    message: str = ""

    @property
    def reduced(self) -> bool:
        return self.dpi < self.requested_dpi


@dataclass(frozen=True)
class PdfPage:
    number: int  # 1-based
    visual: VisualInput | None  # None: the page goes in as its text layer only
    text: str | None = None  # the page's text layer, when asked for or instead of the image
    layer: str = ""  # an image page's text layer that is not in the prompt: drafted from (lookup.py)


@dataclass(frozen=True)
class PdfDocument:
    source: str
    page_count: int
    pages: tuple[PdfPage, ...]  # the pages that go to the model, in document order
    plan: RenderPlan  # the image pages
    layout: tuple = ()  # page_plan.PagePlan of every selected page: image, text or skipped
    message: str = ""  # for stderr: a lowered DPI, or how many pages went in how and why


def open_pdf(source: str | Path | bytes, *, password: str | None = None, name: str = ""):
    """A pymupdf.Document (use it in a `with`), authenticated, with at least one page."""
    pymupdf = quiet()  # MuPDF would print repairs to stderr or stdout; we log them
    label = name or ("stdin" if isinstance(source, bytes) else str(source))
    if not isinstance(source, bytes):
        if Path(source).is_dir():
            raise InputError(f"{label} is a directory, not a PDF")
        if not Path(source).exists():
            raise InputError(f"{label}: no such file; check the path")
    try:
        if isinstance(source, bytes):
            doc = pymupdf.open(stream=source, filetype="pdf")
        else:
            doc = pymupdf.open(str(source), filetype="pdf")
    except (pymupdf.FileDataError, RuntimeError, ValueError) as e:
        raise InputError(f"{label} is not a PDF MuPDF can read ({e}); it may be corrupt or truncated: "
                         f"re-download or re-export it") from None
    _authenticate(doc, password, label)
    notes = pymupdf.TOOLS.mupdf_warnings(reset=True)
    if doc.is_repaired:
        log.warning("%s is damaged; MuPDF repaired it, some pages may be blank or incomplete", label)
    if notes:
        log.debug("%s: MuPDF says: %s", label, notes.replace("\n", "; "))
    if doc.page_count == 0:
        doc.close()
        raise InputError(f"{label} has no pages; nothing to show the model")
    return doc


def _authenticate(doc, password: str | None, label: str) -> None:
    if not doc.needs_pass:
        if password:
            log.info("%s is not encrypted; --password ignored", label)
        return
    if password is None:
        doc.close()
        raise InputError(f"{label} is password-protected; give its password with --password")
    if not doc.authenticate(password):
        doc.close()
        raise InputError(f"the password for {label} is wrong; check --password")


def zoom(rect, dpi: float) -> float:
    """The scale a page rect (points) is rendered at: `dpi`, lowered for a page that would exceed
    MAX_PAGE_PIXELS (a poster; MuPDF refuses pixmaps of gigabytes)."""
    scale = dpi / 72
    x0, y0, x1, y1 = rect
    area = abs(x1 - x0) * abs(y1 - y0) * scale * scale
    # (0.999: MuPDF rounds the pixmap's edges outwards, which must not take it past the cap)
    return scale * math.sqrt(MAX_PAGE_PIXELS / area) * 0.999 if area > MAX_PAGE_PIXELS else scale


def pixel_size(rect, dpi: float) -> tuple[int, int]:
    """(width, height) of a page rect (points, rotation applied) rendered at `dpi`, as MuPDF
    rounds it (the pixmap has exactly this size)."""
    import pymupdf

    z = zoom(rect, dpi)
    box = (pymupdf.Rect(rect) * pymupdf.Matrix(z, z)).irect
    return box.width, box.height


def image_cost(width: int, height: int, spec: PatchSpec) -> int:
    """LLM positions of one image of width x height pixels: placeholders + begin/end markers."""
    T = spec.temporal_patch_size
    h, w = smart_resize(T, height, width, temporal_factor=T, factor=spec.factor,
                        min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    return (h // spec.patch_size) * (w // spec.patch_size) // spec.merge_size**2 + MARKER_TOKENS


def _total_tokens(rects: Counter, dpi: int, spec: PatchSpec, label: str) -> int:
    total = 0
    for (number, rect), count in rects.items():
        w, h = pixel_size(rect, dpi)
        if w == 0 or h == 0:
            raise InputError(f"{label}: page {number} has no area ({rect}); leave it out with --pages")
        try:
            total += count * image_cost(w, h, spec)
        except InputError as e:
            raise InputError(f"{label}: page {number} ({w}x{h} px at {dpi} DPI): {e}") from None
    return total


def plan_pages(
    doc, pages: tuple[int, ...], spec: PatchSpec, *, dpi: int = DEFAULT_DPI,
    budget_tokens: int | None = None, min_dpi: int = MIN_DPI, name: str = "the PDF",
) -> RenderPlan:
    """Choose one DPI for `pages` (1-based) from their sizes alone, nothing rendered.

    The requested DPI if the pages fit `budget_tokens` (or there is no budget), else the highest
    DPI down to min(min_dpi, dpi) that fits; past that floor an InputError suggests --pages.
    """
    plan = fit_dpi(doc, pages, spec, dpi=dpi, budget_tokens=budget_tokens, min_dpi=min_dpi, name=name)
    if plan is not None:
        return plan
    floor = min(min_dpi, dpi)
    tokens = _total_tokens(_rects(doc, pages), floor, spec, name)
    fit = _pages_that_fit(doc, pages, floor, spec, budget_tokens, name)
    raise InputError(
        f"{name}: {len(pages)} pages take {tokens} tokens even at {floor} DPI, more "
        f"than the {budget_tokens} available; choose fewer pages with --pages (about {fit} fit at "
        f"{floor} DPI) or allow a longer context with --max-context"
    )


def fit_dpi(
    doc, pages: tuple[int, ...], spec: PatchSpec, *, dpi: int = DEFAULT_DPI, budget_tokens: int | None = None,
    min_dpi: int = MIN_DPI, name: str = "the PDF",
) -> RenderPlan | None:
    """`plan_pages` without the error: the plan at the highest DPI down to min(min_dpi, dpi) at which
    `pages` fit `budget_tokens`, or None when they do not fit even there."""
    if dpi <= 0:
        raise InputError(f"--dpi must be positive, got {dpi}")
    rects = _rects(doc, pages)
    tokens = _total_tokens(rects, dpi, spec, name)
    if budget_tokens is None or tokens <= budget_tokens:
        return RenderPlan(pages, dpi, dpi, tokens, budget_tokens)
    for lower in range(dpi - 1, min(min_dpi, dpi) - 1, -1):
        fitted = _total_tokens(rects, lower, spec, name)
        if fitted <= budget_tokens:
            message = (f"{name}: {len(pages)} pages at {dpi} DPI take {tokens} tokens, more than the "
                       f"{budget_tokens} available; rendering them at {lower} DPI ({fitted} tokens)")
            log.info(message)
            return RenderPlan(pages, lower, dpi, fitted, budget_tokens, message)
    return None


def _rects(doc, pages: tuple[int, ...]) -> Counter:
    """(first page of that size, rect) -> how many pages: pages of the same size are priced once."""
    rects = Counter()
    first_of = {}
    for n in pages:
        r = tuple(doc[n - 1].rect)
        first_of.setdefault(r, n)
        rects[(first_of[r], r)] += 1
    return rects


def page_cost(doc, number: int, dpi: int, spec: PatchSpec, name: str = "the PDF") -> int:
    """LLM positions of page `number` (1-based) rendered at `dpi`, from its size alone."""
    return _total_tokens(Counter({(number, tuple(doc[number - 1].rect)): 1}), dpi, spec, name)


def _pages_that_fit(doc, pages, dpi: int, spec: PatchSpec, budget: int, name: str) -> int:
    used = 0
    for k, n in enumerate(pages):
        used += page_cost(doc, n, dpi, spec, name)
        if used > budget:
            return k
    return len(pages)


def render_page(doc, number: int, dpi: int, *, name: str = "the PDF"):
    """Page `number` (1-based) as an RGB PIL image at `dpi` (rotation applied, no alpha).
    MuPDF's complaints while drawing it (a damaged file) are logged as a warning."""
    import pymupdf
    from PIL import Image

    pymupdf.TOOLS.mupdf_warnings(reset=True)
    page = doc[number - 1]
    z = zoom(tuple(page.rect), dpi)
    try:
        pix = page.get_pixmap(matrix=pymupdf.Matrix(z, z), alpha=False)
    except (RuntimeError, ValueError, pymupdf.mupdf.FzErrorBase) as e:
        raise InputError(f"{name}: page {number} cannot be rendered ({e}); the PDF may be corrupt") from None
    notes = pymupdf.TOOLS.mupdf_warnings(reset=True)
    if notes:
        log.warning("%s: page %d may be incomplete (MuPDF: %s)", name, number, notes.splitlines()[0])
    return Image.frombytes("RGB", (pix.width, pix.height), pix.samples)


def render_pages(
    source: str | Path | bytes, pages: str | None = None, *, dpi: int = DEFAULT_DPI,
    password: str | None = None, name: str = "", progress: Callable[[int, int], None] | None = None,
) -> list:
    """The selected pages ("1-3,7"; None for all) as RGB PIL images, in order."""
    label = name or ("stdin" if isinstance(source, bytes) else str(source))
    with open_pdf(source, password=password, name=label) as doc:
        numbers = parse_pages(pages, doc.page_count, source=label)
        images = []
        for k, n in enumerate(numbers, start=1):
            images.append(render_page(doc, n, dpi, name=label))
            if progress:
                progress(k, len(numbers))
        return images


def load_pdf(
    source: str | Path | bytes, spec: PatchSpec, *, pages: str | None = None, dpi: int = DEFAULT_DPI,
    budget_tokens: int | None = None, min_dpi: int | None = None, password: str | None = None,
    with_text: bool = False, name: str = "", progress: Callable[[int, int], None] | None = None,
    question: str | None = None, count_tokens: Callable[[str], int] | None = None,
) -> PdfDocument:
    """Plan (inputs/page_plan.py: all pages as images, or the best ones for `question` as images and
    text), then render and preprocess only the image pages; `progress(done, total)` after each."""
    from glmv_cli.inputs.page_plan import READABLE_DPI, page_text, plan_document

    label = name or ("stdin" if isinstance(source, bytes) else str(source))
    with open_pdf(source, password=password, name=label) as doc:
        numbers = parse_pages(pages, doc.page_count, source=label)
        layout = plan_document(doc, numbers, spec, dpi=dpi, budget_tokens=budget_tokens, question=question,
                               with_text=with_text, count_tokens=count_tokens,
                               min_dpi=READABLE_DPI if min_dpi is None else min_dpi, name=label)
        out, total = [], len(layout.render.pages)
        for page in layout.pages:
            n, text = page.number, layout.texts.get(page.number)
            if page.mode == "image":
                image = render_page(doc, n, page.dpi, name=label)
                visual = preprocess_image(image, spec, source=f"{label} page {n}")
                out.append(PdfPage(n, visual, (text or "") if with_text else None,
                                   "" if with_text else page_text(doc[n - 1])))
                if progress:
                    progress(sum(p.visual is not None for p in out), total)
            elif page.mode == "text":
                out.append(PdfPage(n, None, text))
        return PdfDocument(label, doc.page_count, tuple(out), layout.render, layout.pages, layout.message)
