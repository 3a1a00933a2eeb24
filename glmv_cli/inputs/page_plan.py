"""Long PDFs: which pages go to the model as images, which as their text layer, which not at all.

When the selected pages fit the token budget at a readable DPI (READABLE_DPI, or the requested DPI
if lower) they all go in as images, at the highest DPI that fits. When they do not:

1. Every page's text layer is extracted once and the pages are ranked against the question with
   BM25 (bm25s, English stopwords, Snowball stems); ties keep document order.
2. The best pages go in as images at the requested DPI while they fit IMAGE_SHARE of the budget.
3. The next best go in as their text layer while the rest of the budget lasts; text is counted with
   the checkpoint's tokenizer (`count_tokens`), or UTF-8 bytes, an upper bound, without one.
4. Whatever budget is still left goes to images of pages that have no text layer.

Without a question, with no text layer (scans), or when the question matches no page, the pages
are taken evenly spread instead: the first, the last, then the middles of the widest gaps. The
prompt keeps document order and labels every page with its number; nothing is rendered here, and
only the pages that go in as images are rendered afterwards.
"""

from __future__ import annotations

import functools
import heapq
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from glmv_cli.errors import ContextFull
from glmv_cli.inputs.patches import PatchSpec
from glmv_cli.inputs.pdf import RenderPlan, fit_dpi, page_cost

READABLE_DPI = 120  # 10-point text is ~17 px high: read reliably; below this, pages are chosen instead
IMAGE_SHARE = 0.5  # of the budget for the best pages as images; the rest for text layers
MIN_TEXT_ROOM = 16  # stop looking for text pages that fit once fewer tokens than this are left

Counter = Callable[[str], int]


@dataclass(frozen=True)
class PagePlan:
    """How one page goes to the model: as an image at `dpi`, as its text layer, or skipped."""

    number: int  # 1-based
    mode: str  # "image" | "text" | "skipped"
    tokens: int = 0  # prompt tokens it takes, its label included
    dpi: int | None = None

    def to_json(self) -> dict:
        out = {"page": self.number, "as": self.mode}
        if self.dpi is not None:
            out["dpi"] = self.dpi
        return out | {"tokens": self.tokens}


@dataclass(frozen=True)
class DocumentPlan:
    """Every selected page in document order, the text layers that go in, and one line for stderr."""

    pages: tuple[PagePlan, ...]
    render: RenderPlan  # the pages to render as images, and at which DPI
    texts: dict[int, str] = field(default_factory=dict)  # page -> its text, for the pages that carry it
    message: str = ""

    def count(self, mode: str) -> int:
        return sum(p.mode == mode for p in self.pages)


def byte_count(text: str) -> int:
    """An upper bound on the tokens of `text` for byte-level BPE tokenizers: its UTF-8 bytes."""
    return len(text.encode("utf-8"))


def image_label(number: int) -> str:
    return f"Page {number}:"


def text_part(number: int, text: str, *, with_image: bool) -> str:
    """A page's text layer as a prompt part, labelled with its page number."""
    return f"Text of page {number}:\n{text}\n" if with_image else f"Page {number} (text layer only):\n{text}\n"


def extract_texts(doc, numbers: tuple[int, ...]) -> dict[int, str]:
    """The text layer of each page, stripped ("" for scans and blank pages)."""
    return {n: page_text(doc[n - 1]) for n in numbers}


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # (not \t or \n)


def page_text(page) -> str:
    """A page's text layer, stripped, without control characters: glyphs a PDF's font maps to no
    character come out of PyMuPDF as NULs, which would fill a prompt's text budget with nothing."""
    return _CONTROL.sub("", page.get_text()).strip()


@functools.cache
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


@functools.lru_cache(maxsize=2)  # the same document asked again (chat turns) is indexed once
def _index(texts: tuple[str, ...]):
    """A BM25 index of `texts` and its vocabulary, or None when no page has a word to index."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.NOTSET)  # it sets DEBUG on itself; follow glmv's level
    corpus = bm25s.tokenize(list(texts), stopwords="en", stemmer=_stemmer(), show_progress=False)
    if not corpus.vocab:
        return None
    index = bm25s.BM25()
    index.index(corpus, show_progress=False)
    return index, corpus.vocab


def rank(texts: list[str], question: str) -> list[float] | None:
    """BM25 scores of `texts` against `question`, or None when no page or no question word can match."""
    import bm25s

    built = _index(tuple(texts))
    if built is None:
        return None
    index, vocab = built
    query = bm25s.tokenize([question], stopwords="en", stemmer=_stemmer(), show_progress=False,
                           return_ids=False)[0]
    known = [w for w in query if w in vocab]
    if not known:
        return None
    scores = [float(s) for s in index.get_scores(known)]
    return scores if max(scores) > 0 else None


def spread_order(count: int) -> list[int]:
    """0..count-1 as first, last, then the middle of the widest gap left, again and again: any
    prefix of the result is spread evenly over the range."""
    if count <= 2:
        return list(range(count))
    order, gaps = [0, count - 1], [(1 - count, 0)]  # heap of (-width, start): widest first, then earliest
    while gaps:
        negative, lo = heapq.heappop(gaps)
        hi = lo - negative
        if hi - lo < 2:
            continue
        mid = (lo + hi) // 2
        order.append(mid)
        heapq.heappush(gaps, (lo - mid, lo))
        heapq.heappush(gaps, (mid - hi, mid))
    return order


def priority(numbers: tuple[int, ...], texts: dict[int, str], question: str | None) -> tuple[list[int], str]:
    """The pages, best first, and why in that order (for the note)."""
    if not any(texts.values()):
        why = "spread evenly over the document: it has no text layer to rank the pages by (a scan?)"
    elif not (question or "").strip():
        why = "spread evenly over the document: there is no question to rank the pages by"
    else:
        scores = rank([texts[n] for n in numbers], question)
        if scores is not None:
            best = sorted(range(len(numbers)), key=lambda k: -scores[k])  # stable: ties keep page order
            return [numbers[k] for k in best], "the best matches for the question by their text"
        why = "spread evenly over the document: the question matches no page's text"
    return [numbers[k] for k in spread_order(len(numbers))], why


def plan_document(
    doc, numbers: tuple[int, ...], spec: PatchSpec, *, dpi: int, budget_tokens: int | None,
    question: str | None = None, with_text: bool = False, count_tokens: Counter | None = None,
    min_dpi: int = READABLE_DPI, name: str = "the PDF", texts: dict[int, str] | None = None,
) -> DocumentPlan:
    """Plan `numbers` (1-based, in order) within `budget_tokens`; see the module docstring.
    `texts`: the pages' text layers when the caller has them already (extract_texts)."""
    count = count_tokens or byte_count
    labelled = len(numbers) > 1
    label = {n: count(image_label(n)) + 1 if labelled else 0 for n in numbers}
    if with_text and texts is None:
        texts = extract_texts(doc, numbers)
    own = texts if with_text else {}
    extra = {n: label[n] + (count(text_part(n, own[n], with_image=True)) + 1 if own.get(n) else 0)
             for n in numbers}
    room = None if budget_tokens is None else budget_tokens - sum(extra.values())
    whole = fit_dpi(doc, numbers, spec, dpi=dpi, budget_tokens=room, min_dpi=min_dpi, name=name) \
        if room is None or room > 0 else None
    if whole is not None:
        pages = tuple(PagePlan(n, "image", page_cost(doc, n, whole.dpi, spec, name) + extra[n], whole.dpi)
                      for n in numbers)
        return DocumentPlan(pages, whole, {n: t for n, t in own.items() if t}, whole.message)
    return _select(doc, numbers, spec, dpi=dpi, budget=budget_tokens, question=question, with_text=with_text,
                   count=count, label=label, name=name, texts=texts or extract_texts(doc, numbers))


def _select(doc, numbers, spec, *, dpi, budget, question, with_text, count, label, name, texts) -> DocumentPlan:
    """Pages by priority: images within IMAGE_SHARE of the budget, then text, then images again."""
    order, why = priority(numbers, texts, question)
    chosen: dict[int, PagePlan] = {}
    left = budget
    image_room = int(budget * IMAGE_SHARE) if any(texts.values()) else budget

    def image(n: int) -> PagePlan:
        own = count(text_part(n, texts[n], with_image=True)) + 1 if with_text and texts[n] else 0
        return PagePlan(n, "image", page_cost(doc, n, dpi, spec, name) + label[n] + own, dpi)

    for n in order:
        plan = image(n)
        if plan.tokens > image_room:
            break
        chosen[n], image_room, left = plan, image_room - plan.tokens, left - plan.tokens
    for n in order:
        if n in chosen or not texts[n] or left < MIN_TEXT_ROOM:
            continue
        tokens = count(text_part(n, texts[n], with_image=False)) + 1
        if tokens <= left:
            chosen[n], left = PagePlan(n, "text", tokens), left - tokens
    for n in order:
        if n not in chosen and not texts[n] and (plan := image(n)).tokens <= left:
            chosen[n], left = plan, left - plan.tokens
    if not chosen:
        left = f"the {budget:,} tokens left in" if budget > 1 else "what is left of"
        raise ContextFull(f"{name}: not even one page fits {left} the context; allow fewer new tokens "
                          f"(--max-new-tokens), a longer context with --max-context, or ask a shorter question")
    pages = tuple(chosen.get(n, PagePlan(n, "skipped")) for n in numbers)
    images = tuple(p.number for p in pages if p.mode == "image")
    render = RenderPlan(images, dpi, dpi, sum(page_cost(doc, n, dpi, spec, name) for n in images), budget)
    plan = DocumentPlan(pages, render, {n: texts[n] for n, p in chosen.items() if p.mode == "text" or with_text})
    return DocumentPlan(pages, render, plan.texts, _message(plan, name, budget, dpi, why))


def _message(plan: DocumentPlan, name: str, budget: int, dpi: int, why: str) -> str:
    images, text, skipped = plan.count("image"), plan.count("text"), plan.count("skipped")
    message = (f"{name}: {len(plan.pages)} pages do not fit the {budget} tokens left at a readable DPI; "
               f"{images} went in as images at {dpi} DPI, {text} as their text layer and {skipped} not at "
               f"all; pages chosen as {why}")
    if skipped:
        message += ("; name the pages with --pages, use --map-reduce to read them all, or allow fewer new "
                    "tokens (--max-new-tokens) to leave more room")
    return message
