"""The FastAPI application: OpenAI-compatible routes, auth, limits, errors in OpenAI's shape.

    from adhere.serve.app import create_app
    app = create_app(state)        # stage.py builds the state and runs it with uvicorn

Every route needs `Authorization: Bearer <key>` except /health (liveness) and /ready (the model
is loaded); the dashboard also takes its session cookie. Errors always have OpenAI's JSON shape
and never a stack trace: 400 invalid request, 401 no or wrong key, 404 unknown model or route,
413 body too large, 422 wrong types, 429 queue full (with Retry-After), 500 a bug (logged with
the request id), 503 still loading, 504 timed out.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adhere.serve import dashboard, feedback
from adhere.serve.completions import Completion
from adhere.serve.monitor import RequestRecord
from adhere.serve.protocol import ApiError, ChatRequest, error_body, new_completion_id
from adhere.serve.state import ServerState, bearer_scheme, require_key, server_state

log = logging.getLogger("adhere.serve")

CHAT_PATH = "/v1/chat/completions"
DRAIN_LIMIT_BYTES = 64 << 20  # an oversized body is read and dropped up to here, so the client sees the 413
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": error_body(code, text)}}}
    for code, text in ((400, "Invalid request"), (401, "No or wrong API key"), (404, "Unknown model"),
                       (413, "Body too large"), (422, "Wrong types"), (429, "Queue full; see Retry-After"),
                       (503, "Model still loading"), (504, "Timed out"))
}


def create_app(state: ServerState) -> FastAPI:
    """The server's ASGI application around one ServerState."""
    app = FastAPI(title="adhere", summary="An instruction-tuned model behind an OpenAI-compatible API",
                  version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    secured = [Depends(require_key), Depends(bearer_scheme)]

    @app.get("/health", tags=["probes"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["probes"], responses={503: {"description": "Loading, or the model failed to load"}})
    async def ready() -> JSONResponse:
        """Readiness: the model is loaded and requests are served."""
        engine = state.engine
        if engine.ready:
            return JSONResponse({"status": "ready", "model": state.model_name})
        status = "failed" if engine.load_error is not None else "loading"
        return JSONResponse({"status": status}, status_code=503)

    @app.get("/v1/models", dependencies=secured, responses=ERRORS)
    async def list_models() -> dict[str, Any]:
        """The one model this server serves."""
        return {"object": "list", "data": [_model_card(state)]}

    @app.get("/v1/models/{model_id}", dependencies=secured, responses=ERRORS)
    async def get_model(model_id: str) -> dict[str, Any]:
        """The served model, if `model_id` names it."""
        if model_id != state.model_name:
            raise ApiError(404, f"model {model_id!r} not found; this server serves {state.model_name!r}",
                           code="model_not_found")
        return _model_card(state)

    @app.post(CHAT_PATH, dependencies=secured, responses=ERRORS)
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        """OpenAI's chat completions, whole or streamed (`"stream": true`: server-sent events ending in [DONE])."""
        return await Completion(state, body, request).respond()

    @app.get("/metrics", dependencies=secured, responses=ERRORS)
    async def metrics() -> Response:
        """Prometheus metrics: requests by status, latency, tokens/s, queue depth, compliance pass rates."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", dependencies=secured, include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    app.include_router(feedback.router)
    app.include_router(dashboard.router)
    _add_error_handlers(app)
    endpoints = {path for path in app.openapi()["paths"] if "{" not in path} | {"/openapi.json"}
    app.add_middleware(Guard, max_body_bytes=state.config.serve.max_body_bytes, state=state, endpoints=endpoints)
    return app


def _model_card(state: ServerState) -> dict[str, Any]:
    return {"id": state.model_name, "object": "model", "created": int(state.started), "owned_by": "adhere",
            "run_id": state.run_id, **state.info}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        status = 400 if any(e.get("type") == "json_invalid" for e in errors) else 422
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = "request body is not valid JSON" if status == 400 else f"{where or 'body'}: {first.get('msg', 'invalid')}"
        if len(errors) > 1 and status == 422:
            message += f" (and {len(errors) - 1} more)"
        request_id = await _record_refusal(request, status, message)
        headers = {"x-request-id": request_id} if request_id else None
        return JSONResponse(error_body(status, message, param=where), status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        request_id = new_completion_id().replace("chatcmpl", "error")
        log.error("unhandled error in %s %s (%s)", request.method, request.url.path, request_id, exc_info=exc)
        return JSONResponse(error_body(500, f"internal server error ({request_id}); the server log has the details"),
                            status_code=500)


async def _record_refusal(request: Request, status: int, message: str) -> str | None:
    """A chat completion refused before its handler ran (422, bad JSON) is recorded too, if its key was valid."""
    from fastapi.concurrency import run_in_threadpool

    state = server_state(request)
    if request.url.path != CHAT_PATH or state.keys.check_bearer(request.headers.get("authorization")) is None:
        return None
    record = RequestRecord(id=new_completion_id(), model=state.model_name, run_id=state.run_id, status=status,
                           stream=False, messages=None, response=None, latency_s=0.0, error=message)
    try:
        await run_in_threadpool(state.monitor.record, record)
    except Exception:
        log.exception("could not record a refused request")
    return record.id


class Guard:
    """ASGI middleware: refuse bodies over `max_body_bytes` before the app buffers them; count every response."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, state: ServerState, endpoints: set[str]) -> None:
        self.app, self.max_body_bytes, self.state, self.endpoints = app, max_body_bytes, state, endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app raises before answering, ServerErrorMiddleware sends a 500

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            replay = await self._read_body(scope, receive, counted)
            if replay is not None:
                await self.app(scope, replay, counted)
        finally:
            path = scope["path"] if scope["path"] in self.endpoints else "other"
            self.state.metrics.http.labels(endpoint=path, status=str(status)).inc()

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """A receive that replays the whole body; None when the body was refused (413) or the client left."""
        declared = dict(scope.get("headers") or []).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > DRAIN_LIMIT_BYTES:
            await self._too_large(send)
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            size += len(message.get("body", b""))
            if size <= self.max_body_bytes:
                chunks.append(message.get("body", b""))
            elif size > DRAIN_LIMIT_BYTES:
                break
            more = message.get("more_body", False)
        if size > self.max_body_bytes:
            await self._too_large(send)
            return None
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the client to disconnect

        return replay

    async def _too_large(self, send: Send) -> None:
        message = f"request body over {self.max_body_bytes} bytes (serve.max_body_bytes)"
        body = json.dumps(error_body(413, message, code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
