"""The HTTP side: an OpenAI-compatible FastAPI app over a backend (the local `Engine`, or Ray replicas).

    POST /v1/chat/completions   answers, whole or streamed (server-sent events ending with [DONE])
    GET  /v1/models             the base model and each adapter
    GET  /health                always open (no key needed)
    GET  /metrics               Prometheus text

With an API key every route but /health needs `Authorization: Bearer KEY`. Client errors are
OpenAI-style JSON bodies; a client that disconnects cancels its request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException

from vidlab.serve.errors import ServeError, error_body
from vidlab.serve.metrics import HttpMetrics
from vidlab.serve.options import ServeOptions
from vidlab.serve.protocol import ChatRequest, parse_request

log = logging.getLogger("vidlab.serve")
CLIENT_GONE = 499  # nginx's status for a request whose client closed the connection


class Backend(Protocol):
    """What the app needs from whatever generates the answers."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def models(self) -> dict: ...

    def health(self) -> dict: ...

    def adapter_for(self, model: str | None) -> str | None: ...

    async def complete(self, request: ChatRequest) -> dict: ...

    async def stream(self, request: ChatRequest) -> AsyncIterator[dict]: ...


class _ClientGone(Exception):
    pass


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length", "")
    too_large = ServeError(413, f"the request body is over the server's limit of {limit / (1 << 20):.1f} MiB "
                           "(max_body_mb, max_media_mb x max_media_parts). Send smaller media or fewer parts.",
                           code="request_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()  # one copy of the body, grown in place
    async for part in request.stream():
        if len(body) + len(part) > limit:
            raise too_large
        body += part
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ServeError(400, f"the request body is not valid JSON ({err}). Send a JSON object.",
                         code="invalid_json") from None
    except RecursionError:  # `[[[[...` nested deeper than Python's parser goes
        raise ServeError(400, "the request body nests arrays or objects too deeply. Send a flatter JSON object.",
                         code="invalid_json") from None


async def _until_disconnected(request: Request, work: Awaitable):
    """The result of `work`, or _ClientGone (with `work` cancelled) when the client closes the connection first."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
    raise _ClientGone()


def build_app(backend: Backend, options: ServeOptions, registry: CollectorRegistry) -> FastAPI:
    """The app over `backend`; `options` gives the API key and the body size limit."""
    metrics = HttpMetrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await backend.start()
        try:
            yield
        finally:
            await backend.close()

    app = FastAPI(title="vidlab serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = backend
    app.state.registry = registry

    def check_key(request: Request) -> None:
        if options.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), options.api_key.encode()):
            raise ServeError(401, "missing or wrong API key. Send the header `Authorization: Bearer KEY` with the "
                             "server's key.", code="invalid_api_key")

    def error_response(err: ServeError) -> JSONResponse:
        metrics.errors.labels(err.kind).inc()
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers())

    @app.exception_handler(ServeError)
    async def on_serve_error(request: Request, err: ServeError) -> JSONResponse:
        metrics.requests.labels(request.url.path, "", str(err.status)).inc()
        return error_response(err)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, err: HTTPException) -> JSONResponse:
        routes = " Routes: POST /v1/chat/completions, GET /v1/models, /health, /metrics."
        hint = routes if err.status_code == 404 else ""
        metrics.requests.labels(request.url.path if err.status_code != 404 else "other", "",
                                str(err.status_code)).inc()
        body = error_body(err.status_code, f"{request.method} {request.url.path}: {err.detail}.{hint}")
        return JSONResponse(body, status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        metrics.requests.labels(request.url.path, "", "400").inc()
        return error_response(ServeError(400, f"invalid request: {err}"))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, err: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        metrics.requests.labels(request.url.path, "", "500").inc()
        metrics.errors.labels("server_error").inc()
        return JSONResponse(_bug_body(err), status_code=500)

    @app.get("/health")
    async def health() -> dict:
        return backend.health()

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        check_key(request)
        return backend.models()

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        check_key(request)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        check_key(request)
        started = time.monotonic()
        chat = parse_request(await _read_json(request, options.max_body_bytes))
        backend.adapter_for(chat.model)
        model = chat.model or ""
        try:
            if chat.stream:
                chunks = await _until_disconnected(request, backend.stream(chat))
                metrics.requests.labels(request.url.path, model, "200").inc()
                return StreamingResponse(_events(chunks, metrics, started), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            body = await _until_disconnected(request, backend.complete(chat))
        except _ClientGone:
            metrics.requests.labels(request.url.path, model, str(CLIENT_GONE)).inc()
            return Response(status_code=CLIENT_GONE)
        metrics.requests.labels(request.url.path, model, "200").inc()
        metrics.latency.labels("false").observe(time.monotonic() - started)
        return JSONResponse(body)

    return app


def _bug_body(err: BaseException) -> dict:
    """A 500's body: the error's kind only (its text may hold paths, process ids, a remote traceback: those go to
    the server log)."""
    cause = err
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:  # Ray's RayTaskError wraps it
        cause = cause.cause
    return error_body(500, f"internal error ({type(cause).__name__}). This is a bug in vidlab; the server keeps "
                      "running and its log has the details. Please report it.", code="internal_error")


async def _events(chunks: AsyncIterator[dict], metrics: HttpMetrics, started: float) -> AsyncIterator[str]:
    """Server-sent events: one `data:` line per chunk, an error event if the answer fails midway, then [DONE]."""
    try:
        async for item in chunks:
            yield f"data: {json.dumps(item, ensure_ascii=False)}\n\n"
    except ServeError as err:
        metrics.errors.labels(err.kind).inc()
        yield f"data: {json.dumps(err.body())}\n\n"
    except Exception as err:  # a bug while streaming: this answer ends with an error event, the server goes on
        log.exception("streamed answer failed")
        metrics.errors.labels("server_error").inc()
        yield f"data: {json.dumps(_bug_body(err))}\n\n"
    finally:
        await chunks.aclose()
    metrics.latency.labels("true").observe(time.monotonic() - started)
    yield "data: [DONE]\n\n"


def create_app(
    model,
    *,
    adapters: Mapping[str, str | Path] | None = None,
    name: str | None = None,
    options: ServeOptions = ServeOptions(),
    dtype: str = "auto",
    device: str = "auto",
    quantize: str | None = None,
) -> FastAPI:
    """An OpenAI-compatible ASGI app serving a VideoLLaMA3 model and its LoRA adapters.

    The model loads now (so a bad path fails here); the queue starts with the app (its lifespan).
    Run it with any ASGI server, e.g. `uvicorn.run(app, host="127.0.0.1", port=8000)`.

    Args:
        model: a checkpoint folder or hub id, or a loaded (model, processor) pair.
        adapters: name -> LoRA adapter folder; a request picks one with `"model": name`.
        name: the base model's name in requests (default: `model` as given).
        options: limits, security, queue, batching and request defaults (`ServeOptions`); without `media` in
            it, the model folder's family frame rule (`vidlab.models.frame_rules`).
        dtype, device: as in `vidlab.load_model`.
        quantize: 8bit or 4bit LLM weights (bitsandbytes on a GPU; 8bit through torchao on a CPU); None: as saved.

    Raises:
        ModelLoadError: the model or an adapter cannot be loaded.
    """
    from vidlab.models.frame_rules import family_media_settings
    from vidlab.serve.engine import Engine

    if "media" not in options.model_fields_set:  # not chosen: the model folder's family frame rule
        local = model if isinstance(model, (str, Path)) else None
        options = options.model_copy(update={"media": family_media_settings(local)})
    registry = CollectorRegistry()
    engine = Engine(model, adapters=adapters, name=name, options=options, dtype=dtype, device=device,
                    quantize=quantize, registry=registry)
    app = build_app(engine, options, registry)
    app.state.engine = engine
    return app
