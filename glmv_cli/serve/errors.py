"""Exceptions -> OpenAI-style error answers: a status code and one line naming the problem.

Bad input (glmv's InputError, a malformed body) is a 400, an unknown model a 404, a full queue a
503 with Retry-After, a body over the cap a 413. Anything unexpected is a 500 whose message is one
line (the traceback goes to the server's log, never to the client).
"""

from __future__ import annotations

import hmac
import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from glmv_cli.errors import GlmvError, InputError, ModelError
from glmv_cli.serve.protocol import error_body
from glmv_cli.serve.worker import QueueFull

log = logging.getLogger("glmv.serve")

RETRY_AFTER_S = 5


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.headers = status, message, kind, code, headers


def key_refused(api_key: str | None, authorization: bytes) -> ApiError | None:
    """The 401 for a request whose Authorization header is not `Bearer API_KEY` (the scheme in any
    case, as RFC 7235 has it); None if it is, or if the server has no key."""
    scheme, _, credentials = authorization.strip().partition(b" ")
    given = b"Bearer " + credentials.strip() if scheme.lower() == b"bearer" else authorization
    if not api_key or hmac.compare_digest(given, f"Bearer {api_key}".encode()):
        return None
    return ApiError(401, "missing or wrong API key; send Authorization: Bearer KEY (the server's --api-key)",
                    code="invalid_api_key")


class KeyCheck:
    """ASGI middleware: the 401 for a request to any route but /health without `Authorization: Bearer
    KEY`, before the app reads its body (FastAPI parses a body before a route's dependencies run, so
    a key checked there lets a stranger's bad JSON get a 400 that names its problem)."""

    def __init__(self, app, api_key: str | None):
        self.app, self.api_key = app, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.api_key and scope["path"] != "/health":
            header = next((v for k, v in scope.get("headers") or [] if k.lower() == b"authorization"), b"")
            if refused := key_refused(self.api_key, header):
                return await response(refused)(scope, receive, send)
        return await self.app(scope, receive, send)


def describe(e: BaseException) -> tuple[int, str, str, str | None]:
    """(status, message, error type, code) for any exception."""
    if isinstance(e, ApiError):
        return e.status, e.message, e.kind, e.code
    if isinstance(e, QueueFull) and e.at_most is not None:
        return 400, (f"this request asks for more answers at once than the server runs and queues together "
                     f"({e.at_most}: its --parallel plus --max-queue); ask for n <= {e.at_most}"), \
            "invalid_request_error", None
    if isinstance(e, QueueFull):
        return 503, f"the server is busy (its queue is full); retry in {RETRY_AFTER_S} s", "server_error", \
            "queue_full"
    if isinstance(e, InputError):
        return 400, str(e), "invalid_request_error", None
    if isinstance(e, ModelError):
        return 500, str(e), "server_error", "model_error"
    if isinstance(e, GlmvError):
        return 400, str(e), "invalid_request_error", None
    log.error("unexpected error", exc_info=e)
    return 500, f"internal error ({type(e).__name__}: {str(e)[:200]})", "server_error", None


def response(e: BaseException) -> JSONResponse:
    status, message, kind, code = describe(e)
    headers = getattr(e, "headers", None) or ({"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None)
    return JSONResponse(error_body(message, kind, code), status_code=status, headers=headers)


class Unexpected:
    """ASGI middleware: an exception no handler knows is a 500 in OpenAI's shape, logged with its
    traceback, and the client's connection stays open for its next request (Starlette's own
    catch-all answers and then re-raises, after which the server closes the connection)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as e:
            if started:  # (the status line is sent: nothing left to answer with)
                raise
            await response(e)(scope, receive, send)


def install(app) -> None:
    """Every error the app can meet answers in OpenAI's shape."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse(error_body(validation_message(exc)), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code, headers=exc.headers)

    # Known errors are handled inside the app; any other is answered by Unexpected (app.py adds it
    # inside the request log, so the log has the 500's line too). The connection stays usable.
    for known in (GlmvError, ApiError, QueueFull):
        app.add_exception_handler(known, _known)


async def _known(request: Request, exc: Exception):
    return response(exc)


def validation_message(exc: RequestValidationError) -> str:
    """pydantic's first complaint as one line: 'messages: Field required', 'body is not valid JSON'."""
    errors = exc.errors()
    if not errors:
        return "the request body is invalid"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})"
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid')}"
