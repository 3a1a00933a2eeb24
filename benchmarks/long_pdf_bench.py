"""A 300-page PDF and one question: the time of each step of planning and rendering the pages sent.

    python benchmarks/long_pdf_bench.py [--pages 300] [--reps 3] [--context 65536]

The PDF is written by tests/inputs/long_docs.py (A4, ~30 lines of 8-point text a page, facts on
known pages). Steps, each the best of --reps runs: open the PDF; extract the text layer of every
page; rank the pages against a question with BM25 (index built and queried); plan (page costs,
text-layer token counts with the UTF-8 upper bound, the choice); render and preprocess only the
image pages; all of it through `load_pdf` (what `glmv pdf` does before the model). For comparison:
rendering every page at 96 DPI (what showing all pages downscaled would cost, had it fitted).
The budget is GLM-4.1V's default for a 64k context: 65,536 - 8,192 for the answer - the question
- 64. One JSON line last.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glmv_cli.inputs.image import preprocess_image  # noqa: E402
from glmv_cli.inputs.page_plan import _index as bm25_index  # noqa: E402
from glmv_cli.inputs.page_plan import extract_texts, plan_document, rank  # noqa: E402
from glmv_cli.inputs.patches import PatchSpec  # noqa: E402
from glmv_cli.inputs.pdf import DEFAULT_DPI, MIN_DPI, load_pdf, open_pdf, render_page  # noqa: E402
from tests.inputs.long_docs import write_long_pdf  # noqa: E402


def best(fn, reps: int, before=None) -> tuple[float, object]:
    """The best wall time of `reps` calls of fn() (`before()` untimed before each), and its last value."""
    times, value = [], None
    for _ in range(reps):
        if before:
            before()
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=300)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--context", type=int, default=65536)
    args = ap.parse_args(argv)
    spec = PatchSpec()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.pdf"
        start = time.perf_counter()
        facts = write_long_pdf(path, pages=args.pages, facts=min(200, args.pages), seed=0)
        write_s = time.perf_counter() - start
        question = facts[0].question
        budget = args.context - 8192 - len(question) - 64
        numbers = tuple(range(1, args.pages + 1))
        steps = {}
        steps["open_s"], _ = best(lambda: open_pdf(path).close(), args.reps)
        with open_pdf(path) as doc:
            steps["extract_text_s"], texts = best(lambda: extract_texts(doc, numbers), args.reps)
            corpus = [texts[n] for n in numbers]
            steps["rank_s"], _ = best(lambda: rank(corpus, question), args.reps, before=bm25_index.cache_clear)
            steps["plan_s"], plan = best(
                lambda: plan_document(doc, numbers, spec, dpi=DEFAULT_DPI, budget_tokens=budget, question=question,
                                      texts=texts), args.reps)
            images = plan.render.pages
            steps["render_chosen_s"], _ = best(
                lambda: [preprocess_image(render_page(doc, n, DEFAULT_DPI), spec, source="x") for n in images],
                args.reps)
            all_s, _ = best(lambda: [render_page(doc, n, MIN_DPI) for n in numbers], 1)
        steps["load_pdf_total_s"], loaded = best(
            lambda: load_pdf(path, spec, budget_tokens=budget, question=question), args.reps,
            before=bm25_index.cache_clear)
    counts = {m: plan.count(m) for m in ("image", "text", "skipped")}
    fact_mode = plan.pages[facts[0].page - 1].mode
    print(f"{args.pages}-page PDF (written in {write_s:.2f} s), budget {budget} tokens, best of {args.reps}:",
          file=sys.stderr)
    for name, seconds in steps.items():
        print(f"  {name:<18} {seconds * 1000:8.1f} ms", file=sys.stderr)
    print(f"  pages: {counts['image']} images at {DEFAULT_DPI} DPI, {counts['text']} text, {counts['skipped']} "
          f"skipped; the fact page went in as {fact_mode}", file=sys.stderr)
    print(f"  for comparison: rendering all {args.pages} pages at {MIN_DPI} DPI takes {all_s:.2f} s "
          f"({all_s / steps['load_pdf_total_s']:.1f}x the whole plan-and-render)", file=sys.stderr)
    print(json.dumps({"pages": args.pages, "budget_tokens": budget, "reps": args.reps,
                      **{k: round(v, 4) for k, v in steps.items()}, "render_all_96dpi_s": round(all_s, 4),
                      "as": counts, "fact_page_as": fact_mode, "sent_pages": len(loaded.pages)}))


if __name__ == "__main__":
    main()
