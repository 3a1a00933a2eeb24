"""Start `glmv serve`: open the checkpoint, listen at once (loading.py answers while the weights load),
then serve with uvicorn until Ctrl-C."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from glmv_cli.errors import InputError

log = logging.getLogger("glmv.serve")


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_queue: int = 16
    allowed_local_media_path: Path | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_mb: int = 128
    names: tuple[str, ...] = ()  # --served-model-name: the first is /v1/models' id, all are accepted
    parallel: int | None = None  # requests answered at once (None: parallel_for's default)
    request_log: bool = True  # a line on stderr per answered request
    max_context: int | None = None  # prompt + answer of each request (None: the model's context)


DEFAULT_PARALLEL = 4  # on a CPU or Mac: four requests decoded together


def parallel_for(device_type: str, compile: bool, asked: int | None) -> int:
    """How many requests to answer at once. By default 4 where decode steps run eagerly (a CPU,
    MPS); 1 on CUDA, whose one-request CUDA graph outruns an eager step of several rows, and with
    --compile, whose compiled step takes one request (asking for more there is warned about)."""
    if asked is None:
        return 1 if compile or device_type == "cuda" else DEFAULT_PARALLEL
    if asked > 1 and compile:
        log.warning("serve: --compile decodes one request at a time; --parallel %d is not used", asked)
        return 1
    return asked


def serve(model: str | None, opts: ServeOptions, *, device: str = "auto", dtype: str = "auto",
          quantize: str | None = None, compile: bool = False) -> None:
    import uvicorn

    from glmv_cli.app.meter import Meter
    from glmv_cli.app.session import GenerationOptions, Session, collect
    from glmv_cli.serve.app import create_app
    from glmv_cli.serve.chat import Service
    from glmv_cli.serve.loading import Gate
    from glmv_cli.serve.worker import Worker

    root = opts.allowed_local_media_path
    if root is not None and not root.is_dir():
        raise InputError(f"--allowed-local-media-path {root} is not a folder")
    check_port(opts.host, opts.port)  # before minutes of loading weights
    if opts.host not in ("127.0.0.1", "localhost", "::1") and not opts.api_key:
        log.warning("serve: listening on %s without --api-key: anyone who can reach this port can use the model "
                    "(and make it fetch URLs)", opts.host)
    session = Session(model, device=device, dtype=dtype, quantize=quantize, compile=compile)
    if opts.max_context and opts.max_context > session.config.text.max_position_embeddings:
        raise InputError(f"--max-context {opts.max_context:,} is over the model's context "
                         f"({session.config.text.max_position_embeddings:,} tokens); give at most that")
    names = opts.names or (session.name,)
    meter = Meter()  # (a line every 10 s while the weights are read: 19 GB from a slow disk takes minutes)
    meter.watch(lambda m: log.warning("serve: loading: %s", m.describe()), every=10)
    # the port answers at once: /health says how far loading has come, the rest is a 503 (a 401 first)
    gate = Gate(names[0], meter, api_key=opts.api_key, cors_origins=opts.cors_origins)
    server = uvicorn.Server(uvicorn.Config(gate, host=opts.host, port=opts.port, log_level="warning",
                                           lifespan="off", timeout_graceful_shutdown=2))
    failed: list[BaseException] = []

    def load() -> None:
        try:
            glmv = session.load(meter)
            session.parallel = parallel_for(glmv.device.type, compile, opts.parallel)
            if note := session.parallel_note():
                log.warning("serve: note: %s", note)
            if compile or glmv.device.type == "cuda":  # compiling, CUDA-graph capture, Triton's JIT: now,
                log.warning("serve: warming up the decode step")  # not in the first client's answer
                collect(session.ask("Hello", generation=GenerationOptions(max_new_tokens=4, temperature=0)))
            service = Service(session, Worker(opts.max_queue, threads=session.parallel), root, names=opts.names,
                              max_context=opts.max_context)
            gate.open(create_app(service, api_key=opts.api_key, cors_origins=list(opts.cors_origins),
                                 max_body_bytes=opts.max_body_mb * 2**20, request_log=opts.request_log))
            log.warning("serve: %s ready on http://%s:%d/v1 (OpenAI-compatible; GET /health), %d request%s at "
                        "once", service.model_id, opts.host, opts.port, session.parallel,
                        "s" if session.parallel > 1 else "")
        except BaseException as e:  # (the server stops, and the error is the command's: one line, its exit code)
            failed.append(e)
            server.should_exit = True

    log.warning("serve: loading %s (http://%s:%d/health says how far)", session.name, opts.host, opts.port)
    loading = threading.Thread(target=load, name="glmv-load", daemon=True)
    loading.start()
    try:
        server.run()  # (uvicorn raises Ctrl-C's KeyboardInterrupt again once it has stopped)
    finally:
        if loading.is_alive() and not failed:  # stopped while loading: now, not once the files are read
            log.warning("serve: stopped while loading")
            logging.shutdown()
            os._exit(130)
    if failed:
        raise failed[0]


def check_port(host: str, port: int) -> None:
    """InputError when (host, port) cannot be listened on (in use, or not an address of this machine)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise InputError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, kind, _, _, address = infos[0]
    with socket.socket(family, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise InputError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or stop "
                             f"what uses it") from None
