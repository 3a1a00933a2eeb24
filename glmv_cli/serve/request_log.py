"""One line on the server's stderr per answered /v1 request: what was asked, how it went, how fast.

    glmv: 14:02:11 200 POST /v1/chat/completions: 1,234 prompt tokens (1,100 cached), 87 generated
          (21 from drafts), first token 0.41 s, 3.20 s, 27.2 tokens/s
    glmv: 14:02:15 400 POST /v1/chat/completions: the image ... does not decode ...

An ASGI middleware times each request from its arrival to the last byte of its answer (a stream's
too) and reads the status; the routes add what only they know (`note`): the usage of every choice,
when the first token came, an error told inside a stream. An error's line carries the message the
client got. `glmv serve --no-request-log` turns it off.
"""

from __future__ import annotations

import json
import logging
import time

log = logging.getLogger("glmv.serve.requests")
log.setLevel(logging.INFO)  # (above the CLI's WARNING: these lines are the server's output)

QUIET_PATHS = ("/health",)


def note(request, **fields) -> None:
    """What a route knows about its request, for its line: results (the Results of its choices),
    first_token (monotonic time of the first text), error (a message told inside a stream)."""
    request.state.log = {**getattr(request.state, "log", {}), **fields}


class RequestLog:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in QUIET_PATHS:
            return await self.app(scope, receive, send)
        start, status, error_body = time.monotonic(), [0], bytearray()

        async def watch(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and status[0] >= 400 and len(error_body) < 4096:
                error_body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            fields = (scope.get("state") or {}).get("log", {})
            log.info("%s", line(scope, status[0] or 500, time.monotonic() - start, start, fields, bytes(error_body)))


def line(scope, status: int, seconds: float, start: float, fields: dict, body: bytes) -> str:
    head = f"{time.strftime('%H:%M:%S')} {status} {scope['method']} {scope['path']}"
    if status >= 400 or fields.get("error"):
        return f"{head}: {fields.get('error') or _message(body) or 'no answer'}"
    results = [r for r in fields.get("results", ()) if r is not None]
    if not results:
        return f"{head}: {seconds:.2f} s"
    u = results[0].usage
    generated = sum(r.usage.completion_tokens for r in results)
    drafts = sum(r.usage.accepted_drafts for r in results)  # (glmv_cli/lookup.py)
    parts = [f"{u.prompt_tokens:,} prompt tokens" + (f" ({u.cached_tokens:,} cached)" if u.cached_tokens else ""),
             f"{generated:,} generated" + (f" ({drafts:,} from drafts)" if drafts else "")
             + (f" in {len(results)} choices" if len(results) > 1 else "")]
    if "first_token" in fields:
        parts.append(f"first token {fields['first_token'] - start:.2f} s")
        decoding = seconds - (fields["first_token"] - start)
        if decoding > 0 and generated > len(results):
            parts.append(f"{seconds:.2f} s, {(generated - len(results)) / decoding:.1f} tokens/s")
        else:
            parts.append(f"{seconds:.2f} s")
    else:
        parts.append(f"{seconds:.2f} s")
    return f"{head}: " + ", ".join(parts)


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:300]
