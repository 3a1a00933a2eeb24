"""How many ATen operations one decoded token costs, per decoder layer and in all.

On a GPU each operation is at least one kernel, and at batch 1 a CUDA graph's replay time is
close to (kernels x a few microseconds) + (weight bytes / bandwidth): fewer, fused operations is
what is left once the launches are gone. Counted on the CPU with a TorchDispatchMode (the same
operations a CUDA run dispatches), for the static decode step that the CUDA graph captures.

    python benchmarks/decode_ops.py [--shape tiny] [--dtype bfloat16] [--quantize int8]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import glmv_cli
from glmv_cli.random_checkpoint import write_random_checkpoint

VIEWS = {"view", "_unsafe_view", "t", "transpose", "expand", "slice", "split", "split_with_sizes", "select",
         "unsqueeze", "squeeze", "detach", "alias", "permute", "as_strided", "chunk", "unbind", "reshape"}


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in VIEWS:  # views launch nothing
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def count(shape: str, dtype: str, quantize: str | None) -> tuple[Counter, int]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_random_checkpoint(Path(tmp), shape, dtype=getattr(torch, dtype))
        glm = glmv_cli.load(folder, device="cpu", dtype=dtype, quantize=quantize)
        model = glm.model
        model.language_model.setup_cache(1, 64)
        token, pos, delta = torch.tensor([[5]]), torch.tensor([3]), torch.tensor([0])
        model.decode_step(token, pos, delta)  # warm-up
        with CountOps() as counter:
            model.decode_step(token, pos, delta)
        return counter.ops, model.cfg.text.num_layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="tiny")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--quantize", default=None)
    args = ap.parse_args()
    ops, layers = count(args.shape, args.dtype, args.quantize)
    total = sum(ops.values())
    print(f"{total} operations per decoded token, {layers} layers: about {total / layers:.1f} per layer")
    for name, n in ops.most_common():
        print(f"  {name:32s}{n:6d}  ({n / layers:.2f} per layer)")


if __name__ == "__main__":
    main()
