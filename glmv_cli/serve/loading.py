"""The server while the model loads: the port is open at once, /health says how far loading has
come (503, `"status": "loading"`), every other route is a 503 with Retry-After (a 401 first for a
wrong API key, as it will be once loaded; CORS as once loaded); once the model is loaded and warmed
up, every request goes to the app (app.py).

As llama.cpp's server does: a supervisor's readiness probe, or a client started with the server,
gets an answer that says "not yet, about N s" instead of a refused connection for the minutes a
9B model takes to read from a slow disk.
"""

from __future__ import annotations

import json
import math

from glmv_cli.app.meter import Meter
from glmv_cli.serve.errors import KeyCheck
from glmv_cli.serve.protocol import error_body


class Gate:
    """An ASGI app: `loading` answers until `open(app)`; then `app` answers everything."""

    def __init__(self, model_id: str, meter: Meter, *, api_key: str | None = None, cors_origins=()):
        self.model_id, self.meter, self.app = model_id, meter, None
        self.loading = KeyCheck(self._loading, api_key)  # (a wrong key is a 401 now, as it will be once loaded)
        if cors_origins:  # (a browser page's preflight and its 503 pass CORS, as they will once loaded)
            from starlette.middleware.cors import CORSMiddleware

            self.loading = CORSMiddleware(self.loading, allow_origins=list(cors_origins), allow_methods=["*"],
                                          allow_headers=["*"])

    def open(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if self.app is not None:
            return await self.app(scope, receive, send)
        if scope["type"] == "http":
            await self.loading(scope, receive, send)

    async def _loading(self, scope, receive, send):
        left = self.meter.seconds_left()
        wait = max(1, math.ceil(left)) if left is not None else 5
        if scope["path"] == "/health":
            body = {"status": "loading", "model": self.model_id, "fraction": round(self.meter.fraction, 4),
                    "seconds_left": None if left is None else round(left, 1)}
        else:
            body = error_body(f"the model is still loading ({self.meter.describe()}); retry in {wait} s",
                              "service_unavailable", "model_loading")
        await _json(send, 503, body, wait)


async def _json(send, status: int, body: dict, retry_after: int) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"retry-after", str(retry_after).encode())]})
    await send({"type": "http.response.body", "body": data})
