"""The benchmark runs end to end at the tiny shape and its last stdout line is the JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch


def test_bench_tiny_prints_a_json_report_last(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "glmv_cli", "bench", "--shape", "tiny", "--threads", "1", "--new-tokens", "8",
         "--image", "112", "--cache", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["shape"] == "tiny" and report["dtype"] == "float32" and report["device"] == "cpu"
    for side in ("ours", "reference"):
        timings = report[side]
        assert set(timings) >= {"load_s", "peak_rss_gb", "ttft_s", "vision_s", "prefill_s", "decode_tok_s"}
        assert timings["decode_tok_s"] > 0 and timings["ttft_s"] >= timings["vision_s"]
    assert report["ours"]["prompt_tokens"] == report["reference"]["prompt_tokens"]  # the same prompt
    assert report["decode_speedup"] > 0 and report["bandwidth_gbs_measured"] > 0
    assert 0 < report["bandwidth_utilization"]
    assert "decode_tok_s" in out.stderr  # the side-by-side table


def test_bench_reports_int8_accuracy_and_compile_time(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "glmv_cli", "bench", "--shape", "tiny", "--threads", "1", "--new-tokens", "4",
         "--image", "112", "--cache", str(tmp_path), "--quantize", "int8", "--compile", "--skip-reference"],
        capture_output=True, text=True, env=env, timeout=600, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["quantize"] == "int8" and report["compile"] is True and report["reference"] is None
    assert report["ours"]["compile_s"] > 0 and report["ours"]["decode_tok_s"] > 0
    acc = report["quantization_accuracy"]
    assert 0 <= acc["top1_agreement"] <= 1 and acc["positions"] > 10 and acc["logit_cosine_min"] > 0.9
    from glmv_cli.bench.__main__ import decode_bytes_per_token

    float32_bytes = decode_bytes_per_token(tmp_path / "tiny-float32-cpu", torch.float32)
    assert report["weight_bytes_per_token"] < float32_bytes / 2  # int8 weights: bytes read per token drop
