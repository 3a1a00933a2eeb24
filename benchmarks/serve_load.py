"""A bounded load test of `glmv serve` on loopback: N clients asking about an image for S seconds.

    python benchmarks/serve_load.py --model demo --clients 8 --seconds 60 [--max-tokens 32] [--stream] \
        [--parallel N] [--dtype float32]

Starts a real `glmv serve` on 127.0.0.1 (a free port), warms it up with one request per client,
reads the server's resident memory (VmRSS), then runs the clients (the official `openai` client,
one thread each, back to back) until the time is up; then reads the memory again. Prints a table on
stderr and one JSON line on stdout: requests/s, generated tokens/s, p50/p99 latency, errors, RSS
before/after, and the server's decode steps (how many rows they ran together, from /health).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What color is the circle?"


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    from glmv_cli.app.messages import data_uri
    port = free_port()
    image = {"type": "image_url", "image_url": {"url": data_uri(Path(args.image).read_bytes(), "image/png")}}
    messages = [{"role": "user", "content": [image, {"type": "text", "text": QUESTION}]}]
    extra = [*(["--parallel", str(args.parallel)] if args.parallel else []), *(["--dtype", args.dtype])]
    with tempfile.TemporaryFile() as log, server(args.model, port, args.max_queue, log, extra) as process:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, process)
        run_clients(base, messages, args, deadline=time.monotonic())  # warm-up: one request per client
        before, steps = rss(process.pid), health(base).get("decode_steps") or {}
        results = run_clients(base, messages, args, deadline=time.monotonic() + args.seconds)
        after, state = rss(process.pid), health(base)
    done = state.get("decode_steps") or {}
    steps = {k: done.get(k, 0) - steps.get(k, 0) for k in ("steps", "rows")}
    report(results, before, after, args, state.get("parallel"), steps)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo")
    p.add_argument("--image", default=str(ROOT / "examples" / "shapes.png"))
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--max-queue", type=int, default=64)
    p.add_argument("--stream", action="store_true", help="stream the answers (server-sent events)")
    p.add_argument("--parallel", type=int, default=None, help="glmv serve --parallel (default: the server's)")
    p.add_argument("--dtype", default="auto")
    return p.parse_args(argv)


class server:
    """`glmv serve` as a child process for the duration of a with-block."""

    def __init__(self, model: str, port: int, max_queue: int, log, extra: list[str]):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "glmv_cli", "serve", "--model", model, "--port", str(port), "--max-queue",
             str(max_queue), *extra], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def __enter__(self):
        return self.process

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(30)


def wait_ready(base: str, process, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"glmv serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=5):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit("glmv serve did not start")


def health(base: str) -> dict:
    with urllib.request.urlopen(base + "/health", timeout=30) as r:
        return json.loads(r.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run_clients(base: str, messages: list, args, deadline: float) -> list[tuple[float, str | None, int]]:
    """(latency s, error or None, tokens generated) of every request; each client sends at least one."""
    results, lock = [], threading.Lock()

    def client():
        from openai import OpenAI

        c = OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=120)
        while True:
            start, error, tokens = time.perf_counter(), None, 0
            try:
                answer, tokens = ask(c, messages, args)
                if not answer and not tokens:  # (a random checkpoint may write no answer in its tokens)
                    error = "empty answer"
            except Exception as e:  # noqa: BLE001  (counted, reported)
                error = f"{type(e).__name__}: {e}"
            with lock:
                results.append((time.perf_counter() - start, error, tokens))
            if time.monotonic() >= deadline:
                return

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def ask(c, messages: list, args) -> tuple[str, int]:
    """(the answer, or the reasoning when the tokens ran out before an answer; tokens generated)."""
    kwargs = dict(model="", messages=messages, temperature=0, max_tokens=args.max_tokens)
    if not args.stream:
        done = c.chat.completions.create(**kwargs)
        m = done.choices[0].message
        return m.content or getattr(m, "reasoning", None) or "", done.usage.completion_tokens
    chunks = list(c.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    text = "".join((d.content or "") + (getattr(d, "reasoning", None) or "") for d in deltas)
    return text, chunks[-1].usage.completion_tokens


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def report(results, before: int, after: int, args, parallel, steps: dict) -> None:
    latencies = [t for t, _, _ in results]
    errors = [e for _, e, _ in results if e]
    out = {"model": args.model, "clients": args.clients, "parallel": parallel, "seconds": args.seconds,
           "stream": args.stream, "max_tokens": args.max_tokens, "requests": len(results), "errors": len(errors),
           "requests_per_s": round(len(results) / args.seconds, 2),
           "tokens_per_s": round(sum(n for _, _, n in results) / args.seconds, 1),
           "rows_per_step": round(steps["rows"] / steps["steps"], 2) if steps.get("steps") else None,
           "p50_s": round(percentile(latencies, 0.5), 3), "p99_s": round(percentile(latencies, 0.99), 3),
           "rss_before_mb": round(before / 2**20, 1), "rss_after_mb": round(after / 2**20, 1)}
    for key, value in out.items():
        print(f"{key:>16}: {value}", file=sys.stderr)
    if errors:
        print(f"first error: {errors[0]}", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
