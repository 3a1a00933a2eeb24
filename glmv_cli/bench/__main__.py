"""`glmv bench`: ours against transformers' Glm4vForConditionalGeneration on the same random weights.

    python -m glmv_cli.bench --shape small --dtype float32 [--image 448] [--new-tokens 32] [--threads 2]
                             [--quantize int8] [--compile] [--skip-reference]

Builds (or reuses) a random checkpoint of the shape, runs ours then the reference in this process
with the same dtype, threads and prompt (text + one image), prints a table on stderr and one JSON
object as the last line of stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from glmv_cli.bench.accuracy import quantization_accuracy
from glmv_cli.bench.bandwidth import copy_bandwidth, weight_read_bandwidth
from glmv_cli.bench.measure import measure_ours, measure_reference, our_preprocessor, prompt_text

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def bench_checkpoint(shape: str, dtype: str, root: Path, device: torch.device) -> Path:
    """A random checkpoint of `shape` saved in `dtype`, written once and reused (drawn on the
    bench's device: a GPU draws the 9b shape's 10 B numbers in seconds)."""
    from glmv_cli.random_checkpoint import write_random_checkpoint

    folder = root / f"{shape}-{dtype}-{device.type}"
    if not (folder / "config.json").is_file():
        print(f"writing a random {shape} checkpoint to {folder} ...", file=sys.stderr)
        write_random_checkpoint(folder, shape, dtype=DTYPES[dtype], device=str(device))
    return folder


def decode_bytes_per_token(folder: Path, dtype: torch.dtype, quantize: str | None = None,
                           device: torch.device | str = "cpu") -> int:
    """Weight bytes one decode step reads: every tensor of the text decoder and the LM head as
    load_model lays them out (int8 and int4 codes with their scales), and one embedding row."""
    from glmv_cli.loading import meta_model, stored_quantization
    from glmv_cli.model.config import Glm4vConfig

    stored = stored_quantization(folder)  # (a --checkpoint glmv quantize wrote)
    model = meta_model(Glm4vConfig.from_folder(folder), dtype, stored or quantize, torch.device(device),
                       stored=bool(stored))
    total = 0
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if name.startswith("model.visual.") or name.endswith("inv_freq"):
            continue
        size = t.numel() * t.element_size()
        total += size // t.shape[0] if ".embed_tokens." in name else size  # one row (and its scale)
    return total


def table(result: dict) -> str:
    rows = ["load_s", "peak_rss_gb", "peak_gpu_gb", "preprocess_s", "vision_s", "prefill_s", "ttft_s", "decode_tok_s"]
    tags = " ".join(t for t in (result["quantize"], "compiled" if result["compile"] else "",
                                "eager" if result["eager"] else "") if t)
    lines = [f"{'':14s}{'ours' + (f' ({tags})' if tags else ''):>12s}{'reference':>12s}{'ratio':>9s}"]
    for key in rows:
        a, b = result["ours"][key], result["reference"][key]
        if not (a or b):  # e.g. GPU memory on a CPU run
            continue
        ratio = (a / b if key == "decode_tok_s" else b / a) if a and b else float("nan")
        lines.append(f"{key:14s}{a:12.4f}{b:12.4f}{ratio:9.2f}")
    lines.append(f"bandwidth: measured weight-read {result['bandwidth_gbs_measured']:.1f} GB/s, copy "
                 f"{result['copy_bandwidth_gbs']:.1f} GB/s; ours achieves {result['ours_bandwidth_gbs']:.1f} GB/s "
                 f"({100 * result['bandwidth_utilization']:.0f}%)")
    if result["compile"]:
        lines.append(f"compiling the decode step took {result['ours']['compile_s']:.1f} s (once, not in decode_tok_s)")
    acc = result.get("quantization_accuracy")
    if acc:
        lines.append(f"{result['quantize']} against unquantized: top-1 agreement "
                     f"{100 * acc['top1_agreement']:.1f}%, logit cosine mean {acc['logit_cosine_mean']:.4f} / "
                     f"min {acc['logit_cosine_min']:.4f} over {acc['positions']} positions")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="glmv bench", description="glmv against transformers on the same random weights")
    ap.add_argument("--shape", default="tiny", choices=["tiny", "small", "1b", "9b"])
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--image", type=int, default=448, help="side of the square test image, pixels")
    ap.add_argument("--prompt-words", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--checkpoint", type=Path, default=None, help="use this folder instead of a random one")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("GLMV_BENCH_CACHE",
                                                                         Path.home() / ".cache" / "glmv" / "bench")))
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--quantize", choices=["int8", "int4"], default=None,
                    help="ours with int8 or int4 weights (and its accuracy cost)")
    ap.add_argument("--compile", action="store_true", help="ours with the torch.compile'd decode step")
    ap.add_argument("--eager", action="store_true", help="ours without CUDA graphs (their default on CUDA)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    folder = args.checkpoint or bench_checkpoint(args.shape, args.dtype, args.cache, device)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (args.image, args.image, 3), dtype=np.uint8))
    text = prompt_text(args.prompt_words)
    common = dict(device=device, dtype=dtype, new_tokens=args.new_tokens)
    if device.type == "cuda":  # the CUDA context exists before either load is timed, as it does for
        torch.zeros(1, device=device)  # the reference, which runs second in this process
    ours = measure_ours(folder, image, text, quantize=args.quantize, compile=args.compile,
                        graph=False if args.eager else None, **common)
    gc.collect()  # ours is gone before the reference loads
    reference = None if args.skip_reference else measure_reference(folder, image, text, **common)
    accuracy = None
    if args.quantize:
        prompts = [our_preprocessor(folder, image, text)(), our_preprocessor(folder, None, prompt_text(48))()]
        accuracy = quantization_accuracy(folder, prompts, device=device, dtype=dtype, quantize=args.quantize)
    weight_bw = weight_read_bandwidth(device, dtype)
    per_token = decode_bytes_per_token(folder, dtype, args.quantize, device)
    achieved = per_token * ours.decode_tok_s / 1e9
    result = {
        "shape": args.shape, "dtype": args.dtype, "device": str(device), "threads": torch.get_num_threads(),
        "image": args.image, "prompt_tokens": ours.prompt_tokens, "new_tokens": args.new_tokens,
        "ours": ours.as_dict(), "reference": reference.as_dict() if reference else None,
        "decode_speedup": round(ours.decode_tok_s / reference.decode_tok_s, 3) if reference else None,
        "ttft_speedup": round(reference.ttft_s / ours.ttft_s, 3) if reference else None,
        "weight_bytes_per_token": per_token, "bandwidth_gbs_measured": round(weight_bw, 2),
        "copy_bandwidth_gbs": round(copy_bandwidth(device), 2), "ours_bandwidth_gbs": round(achieved, 2),
        "bandwidth_utilization": round(achieved / weight_bw, 3),
        "quantize": args.quantize, "compile": args.compile, "eager": args.eager,
        "quantization_accuracy": accuracy,
    }
    if reference:
        print(table(result), file=sys.stderr)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
