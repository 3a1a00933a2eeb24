"""The table at the end of benchmarks/gpu_check.sh: one row per `glmv bench` JSON report given.

    python benchmarks/gpu_table.py OUT/bench_*.json

Columns: load, peak host and GPU memory, time to first token, decode tokens/s, the share of the
measured weight-read bandwidth that decoding achieves, compile time, and, where the report ran
transformers in the same process, transformers' numbers and our decode speed-up over it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load_report(path: Path) -> dict | None:
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def rows(report: dict, name: str) -> list[list[str]]:
    o = report["ours"]
    out = [[name, f"{o['load_s']:.1f}", f"{o['peak_rss_gb']:.1f}", f"{o.get('peak_gpu_gb', 0):.1f}",
            f"{o['ttft_s']:.3f}", f"{o['decode_tok_s']:.1f}", f"{100 * report['bandwidth_utilization']:.0f}%",
            f"{o.get('compile_s', 0):.1f}"]]
    ref = report.get("reference")
    if ref:
        out.append([f"  transformers ({name})", f"{ref['load_s']:.1f}", f"{ref['peak_rss_gb']:.1f}",
                    f"{ref.get('peak_gpu_gb', 0):.1f}", f"{ref['ttft_s']:.3f}", f"{ref['decode_tok_s']:.1f}",
                    f"x{report['decode_speedup']:.2f} ours", ""])
    return out


def main(paths: list[str]) -> None:
    header = ["run", "load s", "host GB", "GPU GB", "TTFT s", "tok/s", "of BW", "compile s"]
    table, first = [header], None
    for path in map(Path, paths):
        report = load_report(path) if path.is_file() else None
        if report is None:
            table.append([path.stem, "(no report: see its .err)"] + [""] * 6)
            continue
        first = first or report
        table += rows(report, path.stem.removeprefix("bench_"))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    if first:
        print(f"{first['shape']} {first['dtype']} on {first['device']}, image {first['image']}px, "
              f"{first['prompt_tokens']} prompt tokens, {first['new_tokens']} new; weight-read bandwidth "
              f"{first['bandwidth_gbs_measured']:.0f} GB/s measured")
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    for path in map(Path, paths):
        report = load_report(path) if path.is_file() else None
        if report and report.get("quantization_accuracy"):
            a = report["quantization_accuracy"]
            print(f"{path.stem}: {report['quantize']} top-1 agreement {100 * a['top1_agreement']:.1f}%, "
                  f"logit cosine mean {a['logit_cosine_mean']:.4f} min {a['logit_cosine_min']:.4f} "
                  f"over {a['positions']} positions")


if __name__ == "__main__":
    main(sys.argv[1:])
