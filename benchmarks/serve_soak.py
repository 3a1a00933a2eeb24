"""A soak test of `glmv serve --parallel`: many clients, mixed requests, every answer checked.

    python benchmarks/serve_soak.py [--model demo] [--parallel 4] [--clients 8] [--seconds 120]

Starts a real server on 127.0.0.1 and first asks each kind of request alone, one after another:
the demo's questions about an image, a number, a PDF and a video, a follow-up turn (the prompt
cache), an answer held to a choice, log-probabilities, a stop string, n=2 with a seed, each JSON and
streamed. Then `--clients` threads (the official `openai` client) send random kinds (seeded) for
`--seconds`, some streams dropped after their first chunks (a client that goes away), and every
answer that is read to the end is compared with the one the kind got alone. Prints one JSON line:
requests, mismatches, errors, dropped streams, rows per decode step, the server's memory before and
after; exit code 1 on any mismatch or error.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import free_port, health, rss, server, wait_ready  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def kinds() -> dict[str, dict]:
    from glmv_cli.app.messages import data_uri

    def part(name: str, mime: str, kind: str = "image_url") -> dict:
        url = data_uri((ROOT / "examples" / name).read_bytes(), mime)
        if kind == "file":
            return {"type": "file", "file": {"file_data": url, "filename": name}}
        return {"type": kind, kind: {"url": url}}

    def user(attachment: dict, question: str) -> list[dict]:
        return [{"role": "user", "content": [attachment, {"type": "text", "text": question}]}]

    shapes, number = part("shapes.png", "image/png"), part("number.png", "image/png")
    pdf, video = part("cards.pdf", "application/pdf", "file"), part("clip.mp4", "video/mp4", "video_url")
    color = user(shapes, "What color is the circle?")
    base = {
        "color": dict(messages=color),
        "count": dict(messages=user(shapes, "How many shapes are in the image?")),
        "number": dict(messages=user(number, "What number is written in the image?")),
        "pdf": dict(messages=user(pdf, "On which page is the blue square?")),
        "video": dict(messages=user(video, "At which second does the yellow triangle appear?")),
        "follow_up": dict(messages=color + [{"role": "assistant", "content": "green"},
                                            {"role": "user", "content": "How many shapes are in the image?"}]),
        "choice": dict(messages=color, extra_body={"structured_outputs": {"choice": ["red", "green", "blue"]}}),
        "logprobs": dict(messages=user(number, "What number is written in the image?"), logprobs=True,
                         top_logprobs=2),
        "stop": dict(messages=user(shapes, "What shape is the red one?"), stop=["e"]),
        "n2": dict(messages=user(shapes, "How many shapes are in the image?"), n=2, seed=11, temperature=0.9),
    }
    out = {}
    for name, request in base.items():
        out[name] = dict(request, stream=False)
        if name != "logprobs":
            out[name + "~"] = dict(request, stream=True)
    return out


def answer(client, request: dict, drop_after: int | None = None):
    """What a request got: per choice (content, reasoning, finish reason[, logprobs]); None when
    the stream was dropped on purpose."""
    request = {"model": "", "temperature": 0, "max_tokens": 256, **request}
    if not request["stream"]:
        done = client.chat.completions.create(**request)
        return [(c.message.content, getattr(c.message, "reasoning", None), c.finish_reason,
                 [(t.token, round(t.logprob, 4)) for t in c.logprobs.content] if c.logprobs else None)
                for c in sorted(done.choices, key=lambda c: c.index)]
    stream = client.chat.completions.create(**request)
    got: dict[int, list] = {}
    for k, chunk in enumerate(stream):
        if drop_after is not None and k >= drop_after:
            stream.close()
            return None
        for c in chunk.choices:
            entry = got.setdefault(c.index, ["", "", None, None])
            entry[0] += c.delta.content or ""
            entry[1] += getattr(c.delta, "reasoning", None) or ""
            entry[2] = c.finish_reason or entry[2]
    return [(e[0] or None, e[1] or None, e[2], None) for _, e in sorted(got.items())]


def same(a, b) -> bool:
    """JSON and streamed answers compared alike (an empty content is None in both)."""
    norm = [[(x[0] or None, x[1] or None, x[2], x[3]) for x in r] for r in (a, b)]
    return norm[0] == norm[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo")
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from openai import OpenAI

    todo = kinds()
    port = free_port()
    flags = ["--parallel", str(args.parallel)]
    with tempfile.TemporaryFile() as log, server(args.model, port, 256, log, flags) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, proc)
        client = OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=300)
        alone = {name: answer(client, request) for name, request in todo.items()}
        before, steps0 = rss(proc.pid), health(base).get("decode_steps") or {"steps": 0, "rows": 0}
        counts = {"requests": 0, "mismatches": 0, "errors": 0, "dropped": 0}
        first: list[str] = []
        lock, deadline = threading.Lock(), time.monotonic() + args.seconds

        def work(i: int) -> None:
            rng = random.Random(args.seed * 1000 + i)
            c = OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=300)
            names = sorted(todo)
            while time.monotonic() < deadline:
                name = rng.choice(names)
                drop = rng.choice([1, 3]) if todo[name]["stream"] and rng.random() < 0.15 else None
                problem = None
                try:
                    got = answer(c, todo[name], drop)
                    if got is not None and not same(got, alone[name]):
                        problem = ("mismatches", f"{name}: {got} != {alone[name]}")
                except Exception as e:  # noqa: BLE001  (counted)
                    got, problem = [], ("errors", f"{name}: {type(e).__name__}: {e}")
                with lock:
                    counts["requests"] += 1
                    counts["dropped"] += got is None
                    if problem:
                        counts[problem[0]] += 1
                        first.append(problem[1])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1)
        state = health(base)
        after, steps1 = rss(proc.pid), state.get("decode_steps") or {"steps": 0, "rows": 0}
    steps, rows = steps1["steps"] - steps0["steps"], steps1["rows"] - steps0["rows"]
    out = {**counts, "model": args.model, "parallel": args.parallel, "clients": args.clients,
           "seconds": args.seconds, "kinds": len(todo), "rows_per_step": round(rows / steps, 2) if steps else None,
           "idle_after": not state["busy"] and not state["waiting"],
           "rss_before_mb": round(before / 2**20, 1), "rss_after_mb": round(after / 2**20, 1)}
    for problem in first[:5]:
        print(problem[:400], file=sys.stderr)
    print(json.dumps(out))
    return 1 if counts["mismatches"] or counts["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
