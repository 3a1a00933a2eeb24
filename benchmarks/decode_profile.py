"""Where one decode step's time goes on a GPU, to know what to make faster next.

    python benchmarks/decode_profile.py FOLDER [--device cuda] [--dtype bfloat16] [--quantize int8|int4]
                                        [--cache 2048] [--json OUT.json]

1. the step alone, as generation runs it (a CUDA graph on CUDA), replayed back to back with no host
   work between: ms per token and the weight bytes it reads per second; `glmv bench`'s decode
   speed against this one says how much the host's per-token work costs;
2. the kernels of one eager step (torch.profiler), by name: microseconds and launches per step, and
   their sum against the graph's time per step (the rest is the gaps between kernels);
3. each distinct linear layer of the decoder alone at batch 1 (M = 1): float weights through
   F.linear (cuBLAS), int8 weights through the Triton kernel in every block shape of
   int8_gemv.CANDIDATES (L2 flushed between calls): microseconds and GB/s;
4. the small operations alone: RMSNorm, rotary, decode attention over the cache, SiLU * up.

On a CPU the same code runs as a dry run (profiling CPU operators, timing with perf_counter).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import glmv_cli  # noqa: E402
from glmv_cli.bench.__main__ import DTYPES, decode_bytes_per_token  # noqa: E402
from glmv_cli.generate import StaticStep  # noqa: E402
from glmv_cli.kernels import int8_gemv  # noqa: E402
from glmv_cli.model.quant import Int8Linear  # noqa: E402
from glmv_cli.model.quant_int4 import Int4Linear  # noqa: E402


def timer(device: torch.device):
    """fn -> microseconds per call: Triton's do_bench on CUDA (L2 flushed between calls), else the
    best of a few perf_counter runs."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: 1000 * do_bench(fn, warmup=10, rep=40)

    def cpu(fn, repeats: int = 3) -> float:
        fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return 1e6 * best

    return cpu


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_alone(step, args, device: torch.device, n: int = 50) -> float:
    """ms per step, `n` steps queued back to back."""
    for _ in range(3):
        step(*args)
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        step(*args)
    sync(device)
    return 1000 * (time.perf_counter() - start) / n


def kernel_table(fn, device: torch.device, steps: int = 5) -> tuple[list[dict], float, int]:
    """(rows by name, best first: us and launches per step; kernel us per step; launches per step)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync(device)
    activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU
    kind = DeviceType.CUDA if device.type == "cuda" else DeviceType.CPU
    with profile(activities=[activity]) as prof:
        for _ in range(steps):
            fn()
        sync(device)
    total, count = defaultdict(float), defaultdict(int)
    for e in prof.events():
        if e.device_type == kind and (device.type == "cuda" or e.cpu_parent is None):
            total[e.name] += e.time_range.elapsed_us()
            count[e.name] += 1
    rows = [{"kernel": k, "us": total[k] / steps, "launches": count[k] / steps}
            for k in sorted(total, key=total.get, reverse=True)]
    return rows, sum(total.values()) / steps, int(sum(count.values()) / steps)


def linear_rows(model, device: torch.device, dtype: torch.dtype, measure) -> list[dict]:
    layer = model.language_model.layers[0]
    attn = layer.self_attn  # (int4 keeps q, k and v apart)
    qkv = {"qkv_proj": attn.qkv_proj} if attn.qkv_proj is not None else {
        "q_proj": attn.q_proj, "k_proj": attn.k_proj, "v_proj": attn.v_proj}
    layers = {**qkv, "o_proj": layer.self_attn.o_proj,
              "gate_up_proj": layer.mlp.gate_up_proj, "down_proj": layer.mlp.down_proj, "lm_head": model.lm_head}
    rows = []
    for name, linear in layers.items():
        x = torch.randn(1, linear.in_features, device=device, dtype=dtype)
        shape = f"{linear.out_features}x{linear.in_features}"
        if isinstance(linear, Int8Linear):
            nbytes = linear.weight.numel() + 4 * linear.out_features
            n_k = (linear.out_features, linear.in_features)
            tuned = [c for key, c in int8_gemv.TUNED.items() if key[:2] == n_k]  # what decoding picked
            chosen = tuned[0] if tuned else int8_gemv.block_sizes(*n_k)
            # the CPU dry run times torch's own int8 kernel, once
            configs = dict.fromkeys([chosen, *int8_gemv.CANDIDATES]) if device.type == "cuda" else [chosen]
            for config in configs:
                us = measure(_int8_call(linear, x, config if device.type == "cuda" else None))
                how = f"int8 {config}" + (" *" if config == chosen else "")  # *: the one decoding uses
                rows.append({"layer": name, "shape": shape, "how": how, "us": us, "gbs": nbytes / us / 1e3})
        elif isinstance(linear, Int4Linear):  # its own path: the Triton kernel on CUDA, torch's on a CPU
            nbytes = linear.weight.numel() + linear.scales.numel() * linear.scales.element_size()
            us = measure(lambda linear=linear, x=x: linear(x))
            rows.append({"layer": name, "shape": shape, "how": f"int4 g{linear.group}", "us": us,
                         "gbs": nbytes / us / 1e3})
        else:
            us = measure(_float_call(linear, x))
            rows.append({"layer": name, "shape": shape, "how": "F.linear", "us": us,
                         "gbs": linear.weight.numel() * linear.weight.element_size() / us / 1e3})
    return rows


def _int8_call(linear: Int8Linear, x: torch.Tensor, config):
    if config is None:
        return lambda: linear(x)
    return lambda: int8_gemv.int8_gemv(x, linear.weight, linear.scales, linear.bias, config=config)


def _float_call(linear, x: torch.Tensor):
    return lambda: F.linear(x, linear.weight, linear.bias)


def small_op_rows(model, device: torch.device, dtype: torch.dtype, cache_len: int, measure) -> list[dict]:
    from glmv_cli.model.layers import add_norm
    from glmv_cli.model.rope import inverse_frequencies, text_rope

    cfg = model.cfg.text
    layer = model.language_model.layers[0]
    H, KV, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    x = torch.randn(1, 1, cfg.hidden_size, device=device, dtype=dtype)
    qkv = torch.randn(1, 1, H + 2 * KV, D, device=device, dtype=dtype)
    pos = torch.full((3, 1, 1), cache_len // 2, device=device)
    cos, sin = text_rope(pos, inverse_frequencies(cfg.rotary_dim, cfg.rope_theta).to(device), cfg.mrope_section, dtype)
    q = torch.randn(1, KV, H // KV, D, device=device, dtype=dtype)
    k, v = (torch.randn(1, KV, cache_len, D, device=device, dtype=dtype) for _ in range(2))
    mask = (torch.arange(cache_len, device=device) <= cache_len // 2).view(1, 1, 1, cache_len)
    gate_up = torch.randn(1, 1, 2 * cfg.intermediate_size, device=device, dtype=dtype)

    def silu_mul():
        gate, up = gate_up.chunk(2, dim=-1)
        return up * F.silu(gate)

    ops = {"input_layernorm": lambda: layer.input_layernorm(x),
           "rope (q and k heads)": lambda: _rope(qkv[:, :, :H + KV], cos, sin),
           f"attention over {cache_len} cached": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
           "silu(gate) * up": silu_mul, "residual add": lambda: x + x,
           "seam: x + norm(a), norm(sum)": lambda: add_norm(x, x, layer.post_mlp_layernorm, layer.input_layernorm)}
    if device.type == "cuda":
        from glmv_cli.kernels.decode_attention import decode_attention, supported
        from glmv_cli.kernels.swiglu import swiglu

        ops["silu(gate) * up, one kernel"] = lambda: swiglu(gate_up)
        additive = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, float("-inf"))
        ops[f"attention over {cache_len} cached, additive mask"] = lambda: F.scaled_dot_product_attention(
            q, k, v, attn_mask=additive)
        if supported(q):
            ops[f"attention over {cache_len} cached, split kernel"] = lambda: decode_attention(q, k, v, additive)
    return [{"op": name, "us": measure(fn)} for name, fn in ops.items()]


def _rope(x, cos, sin):
    from glmv_cli.model.layers import fused_kernels
    from glmv_cli.model.rope import apply_text_rope

    if x.is_cuda and fused_kernels():
        from glmv_cli.kernels.rope import rope_heads

        return rope_heads(x, cos, sin)
    return apply_text_rope(x.transpose(1, 2), cos, sin)


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    ap.add_argument("--quantize", choices=["int8", "int4"], default=None)
    ap.add_argument("--cache", type=int, default=2048, help="KV-cache length of the step (a bucket)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    logging.basicConfig(level=logging.INFO, format="%(relativeCreated)7.0f ms  %(message)s")  # load's phases
    if device.type == "cuda":
        torch.zeros(1, device=device)  # the CUDA context, before the load's clock starts
    glm = glmv_cli.load(args.folder, device=device, dtype=dtype, quantize=args.quantize)
    model, measure = glm.model, timer(device)
    step = glm.decode_step() or StaticStep(model, model.decode_step)
    step.begin(args.cache)
    token = torch.tensor([[100]], device=device)
    pos, delta = torch.tensor([args.cache // 2], device=device), torch.tensor([0], device=device)
    per_token = decode_bytes_per_token(args.folder, dtype, args.quantize, device)
    alone_ms = step_alone(step, (token, pos, delta), device)
    kernels, kernel_us, launches = kernel_table(lambda: model.decode_step(token, pos, delta), device)
    step.end()
    split_ms = None
    if device.type == "cuda":  # the same step with the split-cache attention kernel (opt-in so far)
        from glmv_cli.cuda_graph import CudaGraphStep

        step.release()
        os.environ["GLMV_DECODE_ATTENTION"] = "split"
        other = CudaGraphStep(model, model.decode_step)
        other.begin(args.cache)
        split_ms = step_alone(other, (token, pos, delta), device)
        other.release()
        del os.environ["GLMV_DECODE_ATTENTION"]
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "dtype": args.dtype,
              "quantize": args.quantize, "cache": args.cache, "step_ms": alone_ms, "step_tok_s": 1000 / alone_ms,
              "step_gbs": per_token / alone_ms / 1e6, "weight_bytes_per_token": per_token,
              "step_ms_split_attention": split_ms,
              "kernel_us_per_step": kernel_us, "launches_per_step": launches, "kernels": kernels[:30],
              "linear": linear_rows(model, device, dtype, measure),
              "small_ops": small_op_rows(model, device, dtype, args.cache, measure)}
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


def render(r: dict) -> str:
    lines = [f"decode step on {r['device']} ({r['dtype']}{', ' + r['quantize'] if r['quantize'] else ''}, "
             f"cache {r['cache']}): {r['step_ms']:.3f} ms alone = {r['step_tok_s']:.1f} tok/s, "
             f"{r['step_gbs']:.0f} GB/s of weights",
             f"with GLMV_DECODE_ATTENTION=split: {r['step_ms_split_attention'] or float('nan'):.3f} ms alone",
             f"eager step: {r['launches_per_step']} kernels, {r['kernel_us_per_step'] / 1000:.3f} ms of kernel time "
             f"({100 * r['kernel_us_per_step'] / 1000 / r['step_ms']:.0f}% of the step alone)",
             f"{'us/step':>9} {'n/step':>7}  kernel"]
    lines += [f"{k['us']:9.1f} {k['launches']:7.1f}  {k['kernel'][:110]}" for k in r["kernels"][:20]]
    lines.append(f"{'us':>9} {'GB/s':>7}  linear layer at M=1")
    lines += [f"{x['us']:9.1f} {x['gbs']:7.0f}  {x['layer']} {x['shape']} {x['how']}" for x in r["linear"]]
    lines.append(f"{'us':>9}  small operation")
    lines += [f"{x['us']:9.1f}  {x['op']}" for x in r["small_ops"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
