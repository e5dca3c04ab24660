"""The wire format: OpenAI's chat completion request, response, stream chunk and error shapes.

Requests are checked in two layers. The pydantic models below check types and ranges (a wrong
type is 422, as FastAPI reports it); `check_limits` then applies the server's limits and what
this server supports (too many messages, `n` above 1: 400, OpenAI's status for an invalid
request). Fields OpenAI clients send that change nothing here (`user`, `metadata`, penalties
left at 0) are accepted and ignored, so tools built on the `openai` client work unchanged.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from adhere.serve.config import ServeConfig

MAX_STOP_SEQUENCES = 4  # OpenAI's limit on `stop`
MAX_STOP_CHARS = 200  # a stop sequence is a marker, not a paragraph; longer ones are refused
MAX_ID_CHARS = 100  # model names and completion ids
MAX_COMMENT_CHARS = 4000  # a feedback comment
ERROR_TYPES = {
    400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
    405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
    429: "requests", 499: "invalid_request_error", 500: "server_error", 503: "server_error", 504: "server_error",
}


class ApiError(Exception):
    """An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return error_body(self.status, self.message, code=self.code, param=self.param)


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error JSON for a status code."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class TextPart(BaseModel):
    """One part of a message's content; only text parts are served."""

    type: Literal["text"]
    text: str


class Message(BaseModel):
    """A chat message; 'developer' is OpenAI's newer name for 'system'."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        """The content as one string (text parts joined)."""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ResponseFormat(BaseModel):
    """`{"type": "json_object"}` asks for JSON; the spec's constraints check what comes back."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]


class StreamOptions(BaseModel):
    """`include_usage` adds a last chunk with token counts, as OpenAI's API does."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """`POST /v1/chat/completions`."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(max_length=MAX_ID_CHARS)
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None

    def stops(self) -> list[str]:
        """`stop` as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback`: a rating of a completion, optionally with the response it should have been."""

    model_config = ConfigDict(extra="forbid")

    completion_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    rating: Literal["up", "down"] | Annotated[int, Field(ge=1, le=5)] = Field(
        description="'up' or 'down', or a score from 1 (bad) to 5 (good)")
    correction: str | None = Field(None, description="The response the model should have given")
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)


class LoginRequest(BaseModel):
    """`POST /dashboard/login`: an API key, exchanged for a session cookie."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(max_length=1000)


def check_limits(body: ChatRequest, cfg: ServeConfig) -> None:
    """Raise ApiError(400) for a request beyond the server's limits or using what it does not support."""
    if body.n not in (None, 1):
        raise ApiError(400, f"n={body.n}: this server returns one choice per request; send n=1", param="n")
    if len(body.messages) > cfg.max_messages:
        raise ApiError(400, f"{len(body.messages)} messages; this server takes at most {cfg.max_messages} "
                            "(serve.max_messages)", param="messages", code="too_many_messages")
    for i, message in enumerate(body.messages):
        if len(message.text()) > cfg.max_message_chars:
            raise ApiError(400, f"messages[{i}] has {len(message.text())} characters; the limit is "
                                f"{cfg.max_message_chars} (serve.max_message_chars)", param=f"messages[{i}].content")
    if body.messages[-1].role != "user":
        raise ApiError(400, f"the last message is the {body.messages[-1].role}'s; a chat to answer ends with a "
                            "user message", param="messages")
    requested = body.max_completion_tokens or body.max_tokens
    if requested is not None and requested > cfg.max_tokens:
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise ApiError(400, f"{param}={requested} is above this server's cap of {cfg.max_tokens} (serve.max_tokens)",
                       param=param)
    stops = body.stops()
    if len(stops) > MAX_STOP_SEQUENCES or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise ApiError(400, f"stop: give at most {MAX_STOP_SEQUENCES} non-empty sequences of at most "
                            f"{MAX_STOP_CHARS} characters", param="stop")


def chat_messages(body: ChatRequest, system_prompt: str | None) -> list[dict[str, str]]:
    """Plain role/content messages, with the spec's system prompt first when the request has none (as in training)."""
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def new_completion_id() -> str:
    """`chatcmpl-<32 hex>`, also the request id in the monitor database."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage block."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(cid: str, model: str, created: int, text: str, finish_reason: str,
                    prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """A whole (non-streamed) chat completion."""
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason,
                     "logprobs": None}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk_event(cid: str, model: str, created: int, delta: dict[str, str], finish_reason: str | None = None,
                 usage_block: dict[str, int] | None = None) -> str:
    """One server-sent event holding a `chat.completion.chunk`; with `usage_block`, the usage chunk (no choices)."""
    chunk: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    if usage_block is not None:
        chunk["choices"], chunk["usage"] = [], usage_block
    else:
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


def error_event(status: int, message: str, code: str | None = None) -> str:
    """An error inside a stream that has already started (the status line was 200)."""
    return f"data: {json.dumps(error_body(status, message, code=code), ensure_ascii=False)}\n\n"


DONE_EVENT = "data: [DONE]\n\n"


def now() -> int:
    """Unix seconds, as OpenAI's `created`."""
    return int(time.time())
