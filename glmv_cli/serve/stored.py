"""The responses `glmv serve` keeps, so that a Responses API client may go on from one with
`previous_response_id` instead of sending the whole conversation again (as OpenAI's API allows).

Each response stored (`store` is true unless the request says false, as OpenAI's default) keeps
its conversation as Responses input items: the conversation it went on from, its own input, then
its output (reasoning, message, function calls). A request naming it as `previous_response_id` has
those items put before its own input; `instructions` are not carried over (OpenAI's rule: send them
again). The store lives in the server's memory, the most recently used first, at most
`max_responses` responses and `max_bytes` of them (images count in full, as their data URIs); the
oldest go first, and a request naming one that went (or never was) gets a 400 that says to send the
whole conversation. GET /v1/responses/{id} returns a stored response, DELETE removes it.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

from glmv_cli.errors import InputError

MAX_RESPONSES = 256
MAX_BYTES = 256 * 2**20


class ResponseStore:
    def __init__(self, max_responses: int = MAX_RESPONSES, max_bytes: int = MAX_BYTES):
        self.max_responses, self.max_bytes = max_responses, max_bytes
        self._kept: OrderedDict[str, tuple[dict, list, int]] = OrderedDict()  # id -> (response, items, bytes)
        self._bytes = 0
        self._lock = threading.Lock()

    def conversation(self, response_id: str) -> list:
        """The input items a request going on from `response_id` starts with."""
        with self._lock:
            kept = self._kept.get(response_id)
            if kept is None:
                raise InputError(f"previous_response_id {response_id!r} is not a response this server keeps (it "
                                 f"keeps the last {self.max_responses} in memory, within "
                                 f"{self.max_bytes // 2**20} MiB, until it restarts); send the whole "
                                 f"conversation as input")
            self._kept.move_to_end(response_id)
            return list(kept[1])

    def keep(self, response: dict, history: list, own_input: list) -> None:
        """Store a finished response: the conversation it went on from, its input, its output."""
        items = [*history, *own_input, *response.get("output", [])]
        size = len(json.dumps(items, ensure_ascii=False)) + len(json.dumps(response, ensure_ascii=False))
        if size > self.max_bytes:
            return
        with self._lock:
            self._drop(response["id"])
            self._kept[response["id"]] = (response, items, size)
            self._bytes += size
            while len(self._kept) > self.max_responses or self._bytes > self.max_bytes:
                self._drop(next(iter(self._kept)))

    def get(self, response_id: str) -> dict | None:
        with self._lock:
            kept = self._kept.get(response_id)
            return kept[0] if kept else None

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self._drop(response_id)

    def _drop(self, response_id: str) -> bool:
        kept = self._kept.pop(response_id, None)
        if kept is not None:
            self._bytes -= kept[2]
        return kept is not None
