"""Peak memory of the vision tower on many images at once (a long PDF's pages, a video's frames).

Builds the vision tower of a shape's config with random weights (no checkpoint), feeds it `--images`
random images of `--size` pixels square as one prompt would, and prints one JSON line: the patches,
the seconds, and the peak memory the forward added (CUDA: the allocator's peak over what the
weights hold; CPU: the process's peak resident set over what it held before, so run each setting in
a fresh process, as the default does).

    python benchmarks/vision_memory.py --shape 1b --images 8 --size 896
    python benchmarks/vision_memory.py --shape 9b --images 30 --size 1120 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # (kB on Linux)


def measure(shape: str, images: int, size: int, device: str, dtype: torch.dtype, group: int | None) -> dict:
    from glmv_cli.model import vision
    from glmv_cli.model.config import Glm4vConfig
    from glmv_cli.random_checkpoint import SHAPES, build_tokenizer, config_dict

    torch.manual_seed(0)
    cfg = Glm4vConfig.from_dict(config_dict(build_tokenizer(), *SHAPES[shape])).vision
    dev = torch.device(device)
    with torch.device(dev):
        model = vision.VisionModel(cfg).to(dtype).eval()
    if group is not None:
        vision.GROUP_PATCHES = group
    p, t = cfg.patch_size, cfg.temporal_patch_size
    side = size // (p * cfg.spatial_merge_size) * cfg.spatial_merge_size  # patches a side
    grids = [(1, side, side)] * images
    n = images * side * side
    rows = torch.randn(n, cfg.in_channels * t * p * p, dtype=dtype, device=dev)  # (N, C*T*P*P)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = peak_rss()
    began = time.perf_counter()
    with torch.no_grad():
        out = model(rows, grids)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    added = (torch.cuda.max_memory_allocated() if dev.type == "cuda" else peak_rss()) - before
    return dict(shape=shape, device=device, images=images, size=size, patches=n, features=int(out.shape[0]),
                group_patches=vision.GROUP_PATCHES, seconds=round(seconds, 2), peak_added_mib=round(added / 2**20))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=896)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--group", type=int, nargs="*", default=None,
                    help="patches the tower takes at once, one run each (0: all at once); default: ours")
    ap.add_argument("--here", action="store_true", help="measure in this process (one --group)")
    a = ap.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 16))
    if a.here:
        group = a.group[0] if a.group else None
        print(json.dumps(measure(a.shape, a.images, a.size, a.device, getattr(torch, a.dtype),
                                 (10**12 if group == 0 else group) if group is not None else None)))
        return
    for group in a.group or [None]:
        args = [sys.executable, __file__, "--here", "--shape", a.shape, "--images", str(a.images), "--size",
                str(a.size), "--device", a.device, "--dtype", a.dtype]
        args += [] if group is None else ["--group", str(group)]
        subprocess.run(args, check=True)


if __name__ == "__main__":
    main()
