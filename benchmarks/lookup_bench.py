"""Prompt lookup decoding (glmv_cli/lookup.py), measured: what a step that also checks k drafted ids
costs against a one-token step, and what the drafts save on real questions, with and without.

    python benchmarks/lookup_bench.py CHECKPOINT [--device cpu] [--dtype bfloat16] [--quantize int8] \\
        [--draft 3] [--prompt 512] [--questions demo|none] [--max-new-tokens 256] [--each TASK --files N]

1. The step: a one-token decode at a `--prompt`-token KV cache, then steps of 1 + k tokens (k = 1, 2,
   3, 4, 6, 8): milliseconds each (best of 5) and their cost against one token. On CUDA: the
   one-token CUDA graph against the graphs that check drafts (GLMV_SPECULATE=N there).
2. The questions (`--questions demo`: the examples the demo model answers, with its real loaders;
   a trained model's thinking that its answer restates): each asked greedily with GLMV_SPECULATE=0
   and with `--draft`, alternately, twice: decode tokens/s, ids drafted and accepted, and whether
   the answers are the same.
3. `--each TASK`: `--files` fresh demo examples of one task asked in turn by one model, as `glmv ask
   FILES... --each` asks them: each answer drafts from the answers before (lookup.RecentAnswers).

Prints a table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from glmv_cli.lookup import DRAFT_TOKENS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_QUESTIONS = [
    ("What color is the circle?", ["shapes.png"]),
    ("How many shapes are in the image?", ["shapes.png"]),
    ("What number is written in the image?", ["number.png"]),
    ("On which page is the blue square?", ["cards.pdf"]),
    ("At which second does the yellow triangle appear?", ["clip.mp4"]),
]


def graph_step_costs(glm, ids: torch.Tensor, drafts: list[int]) -> list[dict]:
    """CUDA: the one-token graph (what decodes by default) against the graphs that check drafts
    (CudaGraphStep.check), replays timed between synchronizations, best of 20."""
    step, prompt = glm.decode_step(), ids.shape[1]
    step.begin(prompt + max(drafts) + 2)
    pos, delta = torch.tensor([prompt], device=glm.device), torch.zeros(1, dtype=torch.long, device=glm.device)
    out = []
    with torch.no_grad():
        glm.model.prefill(ids.to(glm.device))
        for k in [0, *drafts]:
            row = ids[:, :k + 1].to(glm.device)
            run = (lambda r=row: step(r, pos, delta)) if k == 0 else (lambda r=row: step.check(r, pos, delta))
            run()  # (the check graph's capture)
            times = []
            for _ in range(20):
                torch.cuda.synchronize()
                t = time.perf_counter()
                run()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            out.append({"tokens": k + 1, "ms": round(min(times) * 1000, 3), "graph": True})
    step.end()
    return out


def step_costs(glm, prompt: int, drafts: list[int]) -> list[dict]:
    model, text, c = glm.model, glm.model.language_model, glm.config
    high = min(1000, c.image_token_id, c.video_start_token_id, c.text.vocab_size)
    ids = torch.randint(high // 10, high, (1, prompt), generator=torch.Generator().manual_seed(0))
    if glm.device.type == "cuda":
        out = graph_step_costs(glm, ids, drafts)
        for r in out:
            r["cost"] = round(r["ms"] / out[0]["ms"], 2)
        return out
    text.setup_cache(1, prompt + max(drafts) + 2)
    with torch.no_grad():
        model.prefill(ids.to(glm.device))
        for k in (0, max(drafts)):  # (warm-up: the first steps of each width allocate)
            model.decode(ids[:, :k + 1].to(glm.device), prompt, 0)
        out = []
        for k in [0, *drafts]:
            row = ids[:, :k + 1].to(glm.device)
            times = []
            for _ in range(5):
                t = time.perf_counter()
                model.decode(row, prompt, 0)
                if glm.device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            out.append({"tokens": k + 1, "ms": round(min(times) * 1000, 2)})
    text.drop_cache()
    for r in out:
        r["cost"] = round(r["ms"] / out[0]["ms"], 2)
    return out


def ask_all(session, questions, draft: int, max_new: int) -> list[dict]:
    from glmv_cli import GenerationOptions

    os.environ["GLMV_SPECULATE"] = str(draft)
    out = []
    for question, files in questions:
        r = session.run(question, [str(EXAMPLES / f) for f in files],
                        generation=GenerationOptions(temperature=0, max_new_tokens=max_new))
        out.append({"question": question, "raw": r.raw, "tokens": r.usage.completion_tokens,
                    "tok_s": r.timings.decode_tokens_per_s, "drafted": r.usage.drafted_tokens,
                    "accepted": r.usage.accepted_drafts})
    return out


def each_files(task: str, n: int, folder: Path) -> list[tuple[str, list[str]]]:
    """`n` fresh demo examples of one task, written as files: one question about each (as `glmv ask
    FILES... --each` asks it)."""
    import random

    from glmv_cli.demo.tasks import as_file, make_example

    rng = random.Random(7)
    examples = [as_file(make_example(task, rng, folder, i, thinking="concluding"), folder, i) for i in range(n)]
    return [(e.question, [str(e.attachment)]) for e in examples]


def ask_each(glm_session, questions, draft: int, max_new: int) -> dict:
    """The questions in turn with one model (what --each does): the answers before are drafted from."""
    from glmv_cli import GenerationOptions

    os.environ["GLMV_SPECULATE"] = str(draft)
    glm_session.load().answers.clear()  # (nothing kept from the run before)
    tokens = accepted = 0
    seconds, raws = 0.0, []
    for question, files in questions:
        r = glm_session.run(question, files, generation=GenerationOptions(temperature=0, max_new_tokens=max_new))
        tokens, accepted = tokens + r.usage.completion_tokens, accepted + r.usage.accepted_drafts
        if r.timings.decode_tokens_per_s:
            seconds += (r.usage.completion_tokens - 1) / r.timings.decode_tokens_per_s
        raws.append(r.raw)
    return {"tokens": tokens, "accepted": accepted, "decode_s": round(seconds, 4), "raws": raws}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--quantize", default=None)
    p.add_argument("--draft", type=int, default=DRAFT_TOKENS)
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--questions", choices=["demo", "none"], default="demo")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--each", metavar="TASK", default=None,
                   help="also: --files fresh demo examples of TASK (shapes_count, shapes_color, numbers, ...) "
                        "asked in turn, as glmv ask FILES... --each does")
    p.add_argument("--files", type=int, default=12)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from glmv_cli import Session

    session = Session(args.checkpoint, device=args.device, dtype=args.dtype, quantize=args.quantize)
    glm = session.load()
    results = {"checkpoint": args.checkpoint, "device": args.device, "dtype": str(glm.dtype),
               "quantize": args.quantize, "threads": torch.get_num_threads(),
               "steps": step_costs(glm, args.prompt, [1, 2, 3, 4, 6, 8])}
    print(f"a step of N tokens at a {args.prompt}-token cache ({glm.dtype}, {args.quantize or 'no quantization'}):",
          file=sys.stderr)
    for r in results["steps"]:
        print(f"  {r['tokens']:>2} tokens  {r['ms']:8.2f} ms  {r['cost']:.2f}x one token", file=sys.stderr)
    if args.questions == "demo":
        runs = {0: [], args.draft: []}
        for _ in range(2):
            for draft in runs:
                runs[draft].append(ask_all(session, DEMO_QUESTIONS, draft, args.max_new_tokens))
        rows = []
        for i, (question, _files) in enumerate(DEMO_QUESTIONS):
            off = [r[i] for r in runs[0]]
            on = [r[i] for r in runs[args.draft]]
            rows.append({"question": question, "tokens": on[0]["tokens"],
                         "same": all(a["raw"] == off[0]["raw"] for a in off + on),
                         "tok_s_off": [a["tok_s"] for a in off], "tok_s_on": [a["tok_s"] for a in on],
                         "drafted": on[0]["drafted"], "accepted": on[0]["accepted"]})
        results["questions"] = rows
        print(f"\n{'question':<50} {'tokens':>6} {'drafted':>7} {'accepted':>8} {'tok/s off':>14} "
              f"{'tok/s on':>14} same", file=sys.stderr)
        for r in rows:
            print(f"{r['question'][:50]:<50} {r['tokens']:>6} {r['drafted']:>7} {r['accepted']:>8} "
                  f"{_pair(r['tok_s_off']):>14} {_pair(r['tok_s_on']):>14} {r['same']}", file=sys.stderr)
        tokens = sum(r["tokens"] for r in rows)
        accepted = sum(r["accepted"] for r in rows)
        results["steps_saved"] = round(accepted / max(tokens, 1), 3)
        results["speedup"] = round(statistics.median(x for r in rows for x in r["tok_s_on"])
                                   / statistics.median(x for r in rows for x in r["tok_s_off"]), 2)
        print(f"steps saved: {accepted} of {tokens} tokens ({results['steps_saved']:.0%}); median decode "
              f"tokens/s {results['speedup']}x", file=sys.stderr)
    if args.each:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            questions = each_files(args.each, args.files, Path(tmp))
            runs = {0: [], args.draft: []}
            for _ in range(2):
                for draft in runs:
                    runs[draft].append(ask_each(session, questions, draft, args.max_new_tokens))
        off, on = runs[0], runs[args.draft]
        results["each"] = {"task": args.each, "files": args.files, "tokens": on[0]["tokens"],
                           "accepted": on[0]["accepted"], "decode_s_off": [r["decode_s"] for r in off],
                           "decode_s_on": [r["decode_s"] for r in on],
                           "same": all(r["raws"] == off[0]["raws"] for r in off + on)}
        e = results["each"]
        print(f"\n--each, {args.files} {args.each} examples: {e['accepted']} of {e['tokens']} tokens drawn as drafts "
              f"({e['accepted'] / max(e['tokens'], 1):.0%}); decoding {_pair(e['decode_s_off'])} s without drafts, "
              f"{_pair(e['decode_s_on'])} s with; the same answers: {e['same']}", file=sys.stderr)
    print(json.dumps(results))


def _pair(values: list[float]) -> str:
    return ", ".join(f"{v:.3g}" for v in values)


if __name__ == "__main__":
    main()
