"""The time to the first token of a chat's second turn, with and without the prompt cache.

    python benchmarks/follow_up_bench.py [--shape small | --model FOLDER] [--image 896] [--device cpu] [--reps 3]

A random checkpoint of --shape in the real layout (written to a temporary folder; --model: a
checkpoint folder there is, e.g. the one benchmarks/gpu_check.sh draws), one Session, a
conversation: an image of --image x --image pixels and a question, then a follow-up question.
The second turn's prompt repeats the first (the image, the question, the answer): with the prompt
cache (the default) only what it adds is run; with GLMV_PROMPT_CACHE=0 all of it, vision tower
included. Each timing is the best of --reps conversations. One JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glmv_cli import GenerationOptions, Session  # noqa: E402
from glmv_cli.random_checkpoint import write_random_checkpoint  # noqa: E402

GEN = GenerationOptions(max_new_tokens=16, temperature=0)


def conversation(session: Session, image: Path, reuse: bool):
    """(first turn's result, second turn's result) of one fresh conversation."""
    os.environ["GLMV_PROMPT_CACHE"] = "1" if reuse else "0"
    if session.loaded:
        session.glmv.prompt_cache.clear()  # nothing from the conversation before
    chat = session.conversation()
    first = chat.run("Describe this picture.", [str(image)], generation=GEN)
    second = chat.run("And what is in its top left corner?", generation=GEN)
    return first, second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="small")
    ap.add_argument("--model", type=Path, help="a checkpoint folder instead of a random --shape")
    ap.add_argument("--image", type=int, default=896)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="glmv-follow-up-") as tmp:
        folder = args.model or Path(tmp) / "model"
        if args.model is None:
            write_random_checkpoint(folder, args.shape)
        image = Path(tmp) / "image.png"
        pixels = np.random.default_rng(0).integers(0, 256, (args.image, args.image, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image)
        session = Session(folder, device=args.device, dtype=args.dtype)
        conversation(session, image, True)  # warm-up (loads the weights)
        runs = {reuse: [conversation(session, image, reuse) for _ in range(args.reps)] for reuse in (True, False)}
    first, second = runs[True][0]
    cold = min(s.timings.prefill_s for _, s in runs[False])
    warm = min(s.timings.prefill_s for _, s in runs[True])
    out = {
        "model": str(args.model) if args.model else args.shape, "image": args.image, "device": args.device,
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "first_turn_prompt_tokens": first.usage.prompt_tokens, "image_tokens": first.usage.image_tokens,
        "second_turn_prompt_tokens": second.usage.prompt_tokens, "cached_tokens": second.usage.cached_tokens,
        "first_turn_ttft_s": round(min(f.timings.prefill_s for f, _ in runs[False]), 4),
        "second_turn_ttft_s": round(warm, 4), "second_turn_ttft_without_cache_s": round(cold, 4),
        "speedup": round(cold / warm, 2) if warm else None,
    }
    print(f"second turn: {out['second_turn_prompt_tokens']} prompt tokens, {out['cached_tokens']} from the cache; "
          f"first token after {warm:.3f} s (without the cache {cold:.3f} s, {out['speedup']}x)", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
