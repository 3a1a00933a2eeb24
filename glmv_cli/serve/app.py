"""The HTTP app (FastAPI): GET /health, GET /v1/models and /v1/models/{id}, POST /v1/chat/completions,
POST /v1/responses (OpenAI's Responses API, over the same requests: responses.py) and GET / DELETE
/v1/responses/{id} (the responses kept: stored.py).

/health answers at once, even while the model is busy. Every other route needs `Authorization:
Bearer KEY` when the server has an API key (compared in constant time; the scheme in any case, as
RFC 7235 has it), checked before anything else reads the request: a wrong key is a 401 whatever
the body. Request bodies over `max_body_bytes` are refused with 413 before they are read in full.
CORS is off unless origins are given.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from glmv_cli import __version__
from glmv_cli.serve import chat, errors, responses
from glmv_cli.serve.errors import ApiError
from glmv_cli.serve.protocol import ChatRequest, error_body
from glmv_cli.serve.request_log import RequestLog, note

DEFAULT_MAX_BODY = 128 * 2**20


def create_app(service: chat.Service, *, api_key: str | None = None, cors_origins: list[str] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY, request_log: bool = True) -> FastAPI:
    app = FastAPI(title="glmv", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    errors.install(app)
    app.add_middleware(errors.Unexpected)  # (the innermost: whatever else is added sees its 500)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(errors.KeyCheck, api_key=api_key)  # (before the body is read: a wrong key is always a 401)
    if cors_origins:  # (outside the key: a preflight carries none, and a 401 or 413 gets its CORS headers)
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"], allow_headers=["*"])
    if request_log:
        app.add_middleware(RequestLog)  # (the outermost: a 401 or 413 gets its line too)
    started = int(time.time())

    def model_entry() -> dict:
        return {"id": service.model_id, "object": "model", "created": started, "owned_by": "glmv",
                "max_model_len": service.context}

    @app.get("/health")
    async def health():
        w, s = service.worker, service.session
        return {"status": "ok", "model": service.model_id, "loaded": s.loaded, "busy": w.busy,
                "running": w.running, "waiting": w.waiting, "served": w.served, "parallel": s.parallel,
                "decode_steps": s.glmv.batch_stats() if s.loaded else None}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_entry()]}

    @app.get("/v1/models/{model_id:path}")  # (an id may hold slashes: a Hub name, a checkpoint's folder)
    async def model(model_id: str):
        if not model_id or not service.knows(model_id):
            raise ApiError(404, f"the model {model_id!r} does not exist here; this server serves "
                                f"{service.model_id!r} (GET /v1/models)", code="model_not_found")
        return model_entry()

    @app.post("/v1/chat/completions")
    async def completions(body: ChatRequest, request: Request):
        if not service.knows(body.model):
            raise ApiError(404, f"the model {body.model!r} does not exist here; this server serves "
                                f"{service.model_id!r} (GET /v1/models)", code="model_not_found")
        messages = await run_in_threadpool(service.parse, body)
        jobs = service.jobs(messages, body)
        try:
            heads = await chat.heads(jobs, request.is_disconnected)
            note(request, first_token=time.monotonic())
            if body.stream:
                return StreamingResponse(chat.stream(jobs, heads, body, service.model_id,
                                                     lambda **fields: note(request, **fields)),
                                         media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            done, results = await chat.complete(jobs, heads, body, service.model_id, request.is_disconnected)
            note(request, results=results)
            return done
        except chat.ClientGone:
            for job in jobs:
                job.cancel()
            return Response(status_code=499)  # nobody reads it; nginx's code for "client closed request"
        except BaseException:
            for job in jobs:
                job.cancel()
            raise

    @app.post("/v1/responses")
    async def responses_route(body: responses.ResponsesRequest, request: Request):
        kept = service.responses
        history = kept.conversation(body.previous_response_id) if body.previous_response_id else []
        chat_request = body.to_chat(history)

        def store(response: dict) -> None:
            if body.store is not False:
                kept.keep(response, history, body.input_items())

        if not service.knows(chat_request.model):
            raise ApiError(404, f"the model {body.model!r} does not exist here; this server serves "
                                f"{service.model_id!r} (GET /v1/models)", code="model_not_found")
        messages = await run_in_threadpool(service.parse, chat_request)
        job = service.job(messages, chat_request)
        try:
            head = await chat.first_text(job, request.is_disconnected)
            note(request, first_token=time.monotonic())
            if body.stream:
                return StreamingResponse(responses.stream(job, head, body, service.model_id,
                                                          lambda **fields: note(request, **fields), store),
                                         media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            reply = await chat.gather(job, head, [], request.is_disconnected)
            note(request, results=[reply.result])
            done = responses.complete(reply, body, service.model_id)
            store(done)
            return done
        except chat.ClientGone:
            return Response(status_code=499)
        except BaseException:
            job.cancel()
            raise

    @app.get("/v1/responses/{response_id}")
    async def stored_response(response_id: str):
        found = service.responses.get(response_id)
        if found is None:
            raise ApiError(404, f"no response {response_id!r} is kept here (stored responses live in the "
                                f"server's memory until it restarts)", code="response_not_found")
        return found

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str):
        if not service.responses.delete(response_id):
            raise ApiError(404, f"no response {response_id!r} is kept here", code="response_not_found")
        return {"id": response_id, "object": "response", "deleted": True}

    return app


class BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes` (by Content-Length, or while reading)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._message())
            return message

        return await self.app(scope, limited, send)

    def _message(self) -> str:
        return (f"the request body is over {self.max_bytes // 2**20} MiB; send smaller media (or start the "
                f"server with a larger --max-body-mb)")

    async def _refuse(self, scope, receive, send):
        await JSONResponse(error_body(self._message()), status_code=413)(scope, receive, send)
