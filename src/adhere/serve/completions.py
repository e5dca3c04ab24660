"""One chat completion request, from its checked body to its recorded answer.

    curl -s localhost:8000/v1/chat/completions -H "Authorization: Bearer $KEY" \\
      -d '{"model": "my-project", "messages": [{"role": "user", "content": "Hi"}], "stream": true}'

The request is rendered with the chat template of training (the spec's system prompt first when
it has none), queued on the engine, and answered whole or as server-sent events. Every way it can
end (answered, refused, timed out, failed, abandoned by its client) is recorded exactly once in
the monitor database, before the client can read the end of the response, with the spec's
constraint checks on the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from adhere.errors import UserError
from adhere.generation.backend import GenerationParams
from adhere.serve.engine import Job, Outcome, QueueFull
from adhere.serve.monitor import RequestRecord
from adhere.serve.protocol import (
    DONE_EVENT,
    ApiError,
    ChatRequest,
    chat_messages,
    check_limits,
    chunk_event,
    completion_body,
    error_event,
    new_completion_id,
    now,
    usage,
)
from adhere.serve.state import ServerState

log = logging.getLogger("adhere.serve")

GRACE_S = 2.0  # past its deadline the worker ends a row at its next token; this long later the handler gives up
CANCEL_WAIT_S = 5.0  # after a cancel, how long to wait for the worker's token counts before recording without them
CLIENT_CLOSED = 499  # nginx's status for "client closed the request"; recorded, never sent
ENDED = {"timeout": (504, "timeout"), "error": (500, "generation_failed"), "cancelled": (CLIENT_CLOSED, "cancelled")}


class Completion:
    """The life of one `POST /v1/chat/completions`."""

    def __init__(self, state: ServerState, body: ChatRequest, request: Request) -> None:
        self.state, self.body, self.request = state, body, request
        self.id, self.created, self.arrived = new_completion_id(), now(), time.monotonic()
        self.arrived_at = time.time()  # the record's `created`: when the request came, not when it ended
        self.job: Job | None = None
        self.deltas: deque[str] = deque()  # text from the worker, not yet sent
        self.news = asyncio.Event()  # set when a delta or the outcome arrives
        self.finished: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.recorded = False
        self.watcher: asyncio.Task[None] | None = None

    async def respond(self) -> Response:
        """The response; every ApiError raised is recorded first."""
        try:
            job = await self._submit()
            if self.body.stream:
                return await self._stream(job)
            return await self._whole(job)
        except ApiError as exc:
            outcome = self.finished.result() if self.finished.done() else None
            await self._save(exc.status, outcome, error=exc.message)
            exc.headers.setdefault("x-request-id", self.id)  # the id the monitor database has it under
            raise
        except Exception:  # a bug: free the slot and record it; the app's handler answers 500 and logs it
            if self.job is not None:
                self.state.engine.cancel(self.job)
            await self._save(500, None, error="internal error; see the server log")
            raise

    async def _submit(self) -> Job:
        state, body, cfg = self.state, self.body, self.state.config.serve
        if not state.engine.ready:
            raise ApiError(503, "the model is still loading; retry when GET /ready answers 200",
                           code="model_not_ready", headers={"Retry-After": "5"})
        if body.model != state.model_name:
            raise ApiError(404, f"model {body.model!r} not found; this server serves {state.model_name!r} "
                                "(GET /v1/models)", code="model_not_found", param="model")
        check_limits(body, cfg)
        chat = chat_messages(body, state.config.spec.system_prompt)
        try:
            prompt = await run_in_threadpool(state.engine.encode, chat)
        except UserError as exc:  # the chat template refused the conversation
            raise ApiError(400, str(exc).replace("chats[0]: ", ""), param="messages") from None
        limit = state.engine.max_positions
        if len(prompt) >= limit:
            raise ApiError(400, f"the prompt is {len(prompt)} tokens; this model reads at most {limit}",
                           code="context_length_exceeded", param="messages")
        params = GenerationParams(
            max_new_tokens=body.max_completion_tokens or body.max_tokens or cfg.max_tokens,
            temperature=body.temperature or 0.0, top_p=body.top_p or 1.0, seed=body.seed or 0,
        )
        loop = asyncio.get_running_loop()
        job = Job(prompt=prompt, params=params, stops=tuple(body.stops()), stream=bool(body.stream),
                  deadline=self.arrived + cfg.request_timeout_s, seeded=body.seed is not None,
                  sink=lambda kind, value: loop.call_soon_threadsafe(self._on_event, kind, value))
        try:
            state.engine.submit(job)
        except QueueFull as exc:
            raise ApiError(429, f"the server is busy: {cfg.max_queue} requests are running or waiting "
                                f"(serve.max_queue); retry after {exc.retry_after_s} s", code="rate_limit_exceeded",
                           headers={"Retry-After": str(exc.retry_after_s)}) from None
        self.job = job
        self.watcher = asyncio.create_task(self._watch(job))
        return job

    def _on_event(self, kind: str, value: Any) -> None:
        """On the event loop, in the order the worker sent them: every delta is queued before `finished` is set."""
        if kind == "delta":
            self.deltas.append(value)
        elif not self.finished.done():
            self.finished.set_result(value)
        self.news.set()

    async def _outcome(self, job: Job) -> Outcome:
        """Wait for the job to end; past its deadline (plus grace) end it as timed out."""
        remaining = job.deadline - time.monotonic() + GRACE_S
        try:
            return await asyncio.wait_for(asyncio.shield(self.finished), max(remaining, 0.0))
        except TimeoutError:
            return await self._cancel(job, "timeout")

    async def _cancel(self, job: Job, reason: str) -> Outcome:
        self.state.engine.cancel(job, reason)  # type: ignore[arg-type]  # 'timeout' or 'cancelled'
        try:
            return await asyncio.wait_for(asyncio.shield(self.finished), CANCEL_WAIT_S)
        except TimeoutError:  # the worker is stuck (a prefill of minutes?): end the request without it
            self.finished.set_result(Outcome("", reason, len(job.prompt), job.completion_tokens,  # type: ignore[arg-type]
                                             time.monotonic() - job.enqueued, 0.0, None))
            return self.finished.result()

    async def _whole(self, job: Job) -> Response:
        outcome = await self._outcome(job)
        self._raise_if_failed(outcome)
        await self._save(200, outcome)
        body = completion_body(self.id, self.state.model_name, self.created, outcome.text, outcome.finish_reason,
                               outcome.prompt_tokens, outcome.completion_tokens)
        return JSONResponse(body, headers={"x-request-id": self.id})

    def _raise_if_failed(self, outcome: Outcome) -> None:
        if outcome.finish_reason in ENDED:
            status, code = ENDED[outcome.finish_reason]
            message = {"timeout": f"no answer within serve.request_timeout_s={self.state.config.serve.request_timeout_s:g} s",
                       "error": f"generation failed (request {self.id}); the server log has the details",
                       "cancelled": "the client closed the connection"}[outcome.finish_reason]
            raise ApiError(status, message, code=code)

    async def _stream(self, job: Job) -> Response:
        # Wait for the first token before answering, so a request that never starts gets a real status code.
        if not await self._news(job):
            await self._cancel(job, "timeout")
        if not self.deltas and self.finished.done():
            self._raise_if_failed(self.finished.result())
        return StreamingResponse(self._events(job), media_type="text/event-stream",
                                 headers={"x-request-id": self.id, "Cache-Control": "no-cache"})

    async def _news(self, job: Job) -> bool:
        """Wait until there is text to send or the job has ended; False if its deadline (plus grace) came first."""
        while not self.deltas and not self.finished.done():
            self.news.clear()  # on the event loop, like _on_event: no wake-up can slip in between
            try:
                async with asyncio.timeout(max(job.deadline - time.monotonic() + GRACE_S, 0.0)):
                    await self.news.wait()
            except TimeoutError:
                return False
        return True

    async def _events(self, job: Job) -> AsyncIterator[str]:
        """Server-sent events: the role, the text as it comes, the finish reason, usage, [DONE]."""
        cid, model, created = self.id, self.state.model_name, self.created
        yield chunk_event(cid, model, created, {"role": "assistant", "content": ""})
        while True:
            if self.deltas:  # deltas that queued up meanwhile go out as one chunk
                text = "".join(self.deltas)
                self.deltas.clear()
                yield chunk_event(cid, model, created, {"content": text})
            elif self.finished.done():
                break
            elif not await self._news(job):
                await self._cancel(job, "timeout")
        outcome = self.finished.result()
        if outcome.finish_reason in ENDED:
            status, code = ENDED[outcome.finish_reason]
            await self._save(status, outcome, error=code)
            yield error_event(status, f"the answer ended early: {outcome.finish_reason}", code=code)
        else:
            await self._save(200, outcome)
            yield chunk_event(cid, model, created, {}, outcome.finish_reason)
            options = self.body.stream_options
            if options is not None and options.include_usage:
                yield chunk_event(cid, model, created, {}, usage_block=usage(outcome.prompt_tokens, outcome.completion_tokens))
        yield DONE_EVENT

    async def _watch(self, job: Job) -> None:
        """Cancel the job when the client disconnects before its answer is recorded."""
        while (await self.request.receive())["type"] != "http.disconnect":
            pass
        if not self.recorded and not job.done:
            outcome = await self._cancel(job, "cancelled")
            await self._save(CLIENT_CLOSED, outcome, error="client disconnected")

    async def _save(self, status: int, outcome: Outcome | None, *, error: str | None = None) -> None:
        """Record the request once (checks run on a served answer); never fails the response."""
        if self.recorded:
            return
        self.recorded = True
        if self.watcher is not None and self.watcher is not asyncio.current_task():
            self.watcher.cancel()
        latency_s = time.monotonic() - self.arrived
        try:  # in a worker thread: the checks may validate a large JSON document, the insert may wait on the disk
            await run_in_threadpool(lambda: self.state.monitor.record(self._record(status, outcome, error, latency_s)))
        except Exception:  # a full disk must not turn an answer into an error; the log says what was lost
            log.exception("could not record request %s", self.id)

    def _record(self, status: int, outcome: Outcome | None, error: str | None, latency_s: float) -> RequestRecord:
        from adhere.spec.stage import check_response

        body, state = self.body, self.state
        checks = check_response(state.config.spec, outcome.text) if status == 200 and outcome else []
        params = body.model_dump(exclude={"messages"}, exclude_none=True, mode="json")
        return RequestRecord(
            id=self.id, created=self.arrived_at, model=state.model_name, run_id=state.run_id, status=status, stream=bool(body.stream),
            messages=[{"role": m.role, "content": m.text()} for m in body.messages],
            response=outcome.text if outcome else None, latency_s=latency_s,
            queue_s=outcome.queue_s if outcome else None, generate_s=outcome.generate_s if outcome else None,
            first_token_s=outcome.first_token_s if outcome else None,
            prompt_tokens=outcome.prompt_tokens if outcome else 0,
            completion_tokens=outcome.completion_tokens if outcome else 0,
            finish_reason=outcome.finish_reason if outcome else None, error=error or (outcome.error if outcome else None),
            checks=checks, params=params,
        )
