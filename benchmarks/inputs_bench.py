"""Input loading costs: video frame fetching per backend, PDF page tokens, the budget, render time.

    python benchmarks/inputs_bench.py [--cache DIR] [--reps 3]

Videos: a 60 s 1280x720 30 fps h264 clip (x264 veryfast), encoded once into --cache with two
keyframe intervals: x264's default (250 frames) and 30 frames (one a second, as phones record).
For 16, 32 and the default 2 fps sampling (120 frames) it times decord, PyAV as glmv uses it
(seeking where a keyframe lets it skip >= SEEK_MIN_SKIP frames) and PyAV decoding forward only.
Wall times are the best of --reps runs; cpu is the process CPU time of that run (all threads).
PDF: tokens per A4 page, pages that fit GLM-4.1V's 64k context before and after the DPI budget,
planning a 200-page document, rendering 20 pages at 180 DPI. One JSON line last.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402,F401,I001  (before decord: see glmv_cli/inputs/video_decode.py)
import numpy as np  # noqa: E402

from glmv_cli.inputs import video_decode  # noqa: E402
from glmv_cli.inputs.patches import VIDEO_DEFAULT, PatchSpec  # noqa: E402
from glmv_cli.inputs.pdf import (  # noqa: E402
    DEFAULT_DPI, MIN_DPI, image_cost, load_pdf, open_pdf, pixel_size, plan_pages, render_pages,
)
from glmv_cli.inputs.pages import parse_pages  # noqa: E402
from glmv_cli.inputs.video import load_video, sample_indices  # noqa: E402
from tests.inputs.media import encode_video, write_pdf  # noqa: E402

CONTEXT, ANSWER = 65536, 8192
A4 = (0, 0, 595, 842)


def timed(fn, reps: int) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of that run)."""
    best = (float("inf"), 0.0)
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - w, time.process_time() - c))
    return best


def clip(cache: Path, gop: int | None) -> Path:
    path = cache / f"h264-720p-60s-gop{gop or 250}.mp4"
    if not path.exists():
        print(f"encoding {path.name} (once, ~2 min)...", file=sys.stderr)
        encode_video(path, frames=1800, fps=30, size=(1280, 720), preset="veryfast", gop=gop)
    return path


def bench_video(cache: Path, reps: int) -> dict:
    results = {}
    backends = video_decode.available_backends()
    for gop in (None, 30):
        path = clip(cache, gop)
        probe = video_decode.probe_video(path)
        probe_s, _ = timed(partial(video_decode.probe_video, path), reps)
        name = path.stem
        print(f"{name}: {probe.frame_count} frames, {len(probe.keyframes)} keyframes, probe {probe_s * 1e3:.0f} ms")
        for n in (16, 32, None):
            idx = sample_indices(probe, max_frames=n)
            row = {}
            for label, backend, skip in [("decord", "decord", None), ("pyav", "pyav", None),
                                         ("pyav_forward", "pyav", 10**9)]:
                if backend not in backends:
                    continue
                saved = video_decode.SEEK_MIN_SKIP
                video_decode.SEEK_MIN_SKIP = skip or saved
                try:
                    row[label] = timed(partial(video_decode.decode_frames, path, idx, backend=backend,
                                               probe=probe), reps)
                finally:
                    video_decode.SEEK_MIN_SKIP = saved
            key = f"{name}/{len(idx)}"
            results[key] = {k: round(v[0], 3) for k, v in row.items()}
            print(f"  {len(idx):4d} frames: " + ", ".join(f"{k} {w:.2f}s (cpu {c:.2f}s)" for k, (w, c) in row.items()))
            if n == 32 and "decord" in backends:
                a, b = (video_decode.decode_frames(path, idx, backend=x, probe=probe) for x in ("pyav", "decord"))
                diff = int(np.abs(a.astype(np.int16) - b).max())
                print(f"  pyav vs decord on those 32 frames: max abs pixel difference {diff}")
                results[f"{name}/pyav_vs_decord_max_diff"] = diff
        for n in (32, None):
            wall, _ = timed(partial(load_video, path, VIDEO_DEFAULT, max_frames=n), reps)
            v = load_video(path, VIDEO_DEFAULT, max_frames=n)
            print(f"  load_video(max_frames={n}) auto={video_decode.resolve_backend('auto')}: {wall:.2f}s, "
                  f"grid {v.grid_thw}, {v.grid_thw[0] * v.tokens_per_frame()} tokens")
            results[f"{name}/load_video/{n}"] = round(wall, 3)
    return results


def bench_pdf(tmp: Path, reps: int) -> dict:
    spec = PatchSpec()
    budget = CONTEXT - ANSWER
    per_page = image_cost(*pixel_size(A4, DEFAULT_DPI), spec)
    per_page_floor = image_cost(*pixel_size(A4, MIN_DPI), spec)
    print(f"A4 page: {per_page} tokens at {DEFAULT_DPI} DPI, {per_page_floor} at {MIN_DPI} DPI (incl. 2 markers)")
    print(f"budget {budget} (= {CONTEXT} - {ANSWER} for the answer): {budget // per_page} A4 pages at "
          f"{DEFAULT_DPI} DPI, {budget // per_page_floor} after lowering the DPI to the {MIN_DPI} floor")
    long = write_pdf(tmp / "long.pdf", 200)
    with open_pdf(long) as doc:
        plan_s, _ = timed(lambda: plan_pages(doc, parse_pages("1-51", 200), spec, budget_tokens=budget), reps)
        plan = plan_pages(doc, parse_pages("1-51", 200), spec, budget_tokens=budget)
    print(f"plan 51 of 200 pages: {plan_s * 1e3:.0f} ms -> {plan.dpi} DPI, {plan.tokens} tokens")
    doc20 = write_pdf(tmp / "twenty.pdf", 20)
    render_s, render_cpu = timed(lambda: render_pages(doc20, dpi=DEFAULT_DPI), reps)
    load_s, _ = timed(lambda: load_pdf(doc20, spec, dpi=DEFAULT_DPI), reps)
    print(f"20 A4 pages at {DEFAULT_DPI} DPI: render {render_s:.2f}s (cpu {render_cpu:.2f}s), "
          f"render + preprocess {load_s:.2f}s")
    return {"a4_tokens_180dpi": per_page, "a4_tokens_floor": per_page_floor, "floor_dpi": MIN_DPI,
            "a4_pages_fit_180dpi": budget // per_page, "a4_pages_fit_floor": budget // per_page_floor,
            "plan_51_of_200_ms": round(plan_s * 1e3, 1), "render_20_pages_s": round(render_s, 3),
            "load_20_pages_s": round(load_s, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "glmv-bench")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-video", action="store_true")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = {"pdf": bench_pdf(Path(tmp), args.reps)}
    if not args.skip_video:
        out["video"] = bench_video(args.cache, args.reps)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
