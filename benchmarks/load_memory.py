"""Peak resident memory while loading a checkpoint, against the size of its weights.

    python benchmarks/load_memory.py --shape small --dtype float32 [--load-dtype float32] [--folder DIR]

Writes a random checkpoint (unless --folder is given), then loads it in a fresh process and prints
the process's peak RSS growth during `glmv_cli.load` next to the bytes of the loaded weights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time, torch
import glmv_cli, glmv_cli.api

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
start = time.perf_counter()
glm = glmv_cli.load(sys.argv[1], device="cpu", dtype=sys.argv[2])
seconds = time.perf_counter() - start
weights = sum(p.numel() * p.element_size() for p in glm.model.parameters())
print(json.dumps({"baseline_bytes": before, "peak_growth_bytes": status("VmHWM") - before, "weights_bytes": weights,
                  "load_s": round(seconds, 2)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="small")
    ap.add_argument("--dtype", default="float32", help="dtype the checkpoint is written in")
    ap.add_argument("--load-dtype", default=None, help="dtype to load as (default: same)")
    ap.add_argument("--folder", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            import torch

            from glmv_cli.random_checkpoint import write_random_checkpoint

            folder = write_random_checkpoint(Path(tmp) / args.shape, args.shape, dtype=getattr(torch, args.dtype))
        on_disk = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        out = subprocess.run([sys.executable, "-c", CHILD, str(folder), args.load_dtype or args.dtype],
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result.update(shape=args.shape, file_dtype=args.dtype, load_dtype=args.load_dtype or args.dtype,
                      on_disk_bytes=on_disk, ratio=round(result["peak_growth_bytes"] / result["weights_bytes"], 3))
        print(json.dumps(result))


if __name__ == "__main__":
    main()
