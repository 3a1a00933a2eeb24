"""What decoding several sequences in one step costs (Glm4v.decode_rows, glmv serve --parallel):
time per step and tokens/s over all rows, for 1, 2, 4, 8 rows, against the one-sequence step glmv
uses by default (eager on a CPU, the CUDA graph on CUDA), and the fixed-shape step of N rows that
glmv serve --parallel runs on CUDA in a graph per set of requests (batch_graphs.py; on a CPU the
same step eagerly).

    python benchmarks/batch_decode_bench.py CHECKPOINT [--device cuda] [--dtype bfloat16] \\
        [--rows 1 2 4 8] [--prompt 512] [--steps 32]

Each row is a prompt of `--prompt` random text ids (their keys and values copied from one prefill)
at its own KV cache. Prints one line per setting on stderr and one JSON line on stdout. On CUDA
this says whether an eager step of N rows beats N replays of the one-row graph (glmv serve's
default there is --parallel 1 until it does).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import glmv_cli

    glm = glmv_cli.load(args.checkpoint, device=args.device, dtype=args.dtype)
    model, text = glm.model, glm.model.language_model
    length = args.prompt + args.steps + 8
    c = glm.config
    high = min(1000, c.image_token_id, c.video_start_token_id, c.text.vocab_size)  # plain text ids
    ids = torch.randint(high // 10, high, (1, args.prompt), generator=torch.Generator().manual_seed(0))
    text.setup_cache(1, length)
    model.prefill(ids)
    first, text.caches = text.caches, None
    results = {"checkpoint": args.checkpoint, "device": args.device, "dtype": args.dtype, "prompt": args.prompt,
               "steps": args.steps, "settings": []}
    baseline = one_row_default(glm, ids, args)
    results["settings"].append(baseline)
    report(baseline, baseline)
    for rows in args.rows:
        caches = [[copy(c) for c in first] for _ in range(rows)]
        got = timed(lambda pos, c=caches, n=rows: model.decode_rows(torch.ones(n, 1, dtype=torch.long),
                                                                     [pos] * n, [0] * n, c), args, rows)
        got["how"] = f"decode_rows, {rows} row{'s' if rows > 1 else ''}"
        results["settings"].append(got)
        report(got, baseline)
    for rows in args.rows:  # what glmv serve --parallel runs on CUDA: the static step, in a graph per set
        from glmv_cli.batch_graphs import EagerGraph, RowGraphs
        from glmv_cli.batching import _Row

        cuda = args.device.startswith("cuda")
        graphs = RowGraphs(model, make_graph=None if cuda else EagerGraph)
        caches = [[copy(c) for c in first] for _ in range(rows)]
        token = torch.ones(1, 1, dtype=torch.long, device=glm.device)
        got = timed(lambda pos, c=caches, g=graphs, t=token: g.run([_Row(t, pos, 0, r) for r in c]), args, rows)
        got["how"] = f"{'CUDA graph' if cuda else 'static step'}, {rows} row{'s' if rows > 1 else ''}"
        got["captures"] = graphs.captures
        results["settings"].append(got)
        report(got, baseline)
    print(json.dumps(results))


def one_row_default(glm, ids, args) -> dict:
    """The step a lone request runs: Glm4v.decode (CPU) or the CUDA graph (glmv's default on CUDA)."""
    model, text = glm.model, glm.model.language_model
    step = glm.decode_step()
    if step is None:
        text.setup_cache(1, args.prompt + args.steps + 8)
        model.prefill(ids)
        got = timed(lambda pos: model.decode(torch.ones(1, 1, dtype=torch.long), pos, 0), args, 1)
        text.drop_cache()
        got["how"] = "one row, eager (the default here)"
        return got
    step.begin(args.prompt + args.steps + 8)
    model.prefill(ids)
    token = torch.ones(1, 1, dtype=torch.long, device=glm.device)
    delta = torch.zeros(1, dtype=torch.long, device=glm.device)
    got = timed(lambda pos: step(token, torch.tensor([pos], device=glm.device), delta), args, 1)
    step.end()
    got["how"] = f"one row, {type(step).__name__} (the default here)"
    return got


def copy(cache):
    twin = type(cache)(1, cache.k.shape[1], cache.k.shape[2], cache.k.shape[3], cache.k.dtype, cache.k.device)
    twin.k.copy_(cache.k)
    twin.v.copy_(cache.v)
    return twin


def timed(step, args, rows: int) -> dict:
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        for pos in range(args.prompt, args.prompt + 2):  # warm-up
            step(pos)
        sync()
        start = time.perf_counter()
        for pos in range(args.prompt + 2, args.prompt + 2 + args.steps):
            step(pos)
        sync()
    seconds = (time.perf_counter() - start) / args.steps
    return {"rows": rows, "ms_per_step": round(seconds * 1e3, 2), "tokens_per_s": round(rows / seconds, 1)}


def report(got: dict, baseline: dict) -> None:
    gain = got["tokens_per_s"] / baseline["tokens_per_s"]
    print(f"{got['how']:>40}: {got['ms_per_step']:8.2f} ms a step, {got['tokens_per_s']:8.1f} tokens/s "
          f"({gain:.2f}x the default)", file=sys.stderr)


if __name__ == "__main__":
    main()
