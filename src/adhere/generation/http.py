"""Answers from any OpenAI-compatible `/v1/chat/completions` endpoint: vLLM, TGI, a hosted API, `adhere serve`.

    from adhere.generation import EndpointConfig, GenerationParams, HttpBackend
    backend = HttpBackend(EndpointConfig(base_url="http://localhost:8000/v1", model="m", api_key_env="OPENAI_API_KEY"))
    answers = backend.generate(chats, GenerationParams(max_new_tokens=256))

The one HTTP client of adhere's generation (house style 14), on the standard library:
`urllib.request` for the requests and a thread pool for `concurrency` of them in flight.
Connection errors, timeouts, 429 and 5xx are retried with exponential backoff (or after the
server's Retry-After); other 4xx are not, since the same request would be refused again. A
request that still fails becomes a Generation with finish_reason 'error' and an `error` that
says what happened, so one bad request never loses the other answers.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from adhere.errors import UserError
from adhere.generation.backend import Generation, GenerationParams, Progress, check_chats
from adhere.generation.config import EndpointConfig

BODY_START = 200  # characters of an error response kept in `Generation.error`: enough for an API's message
MAX_RETRY_AFTER_S = 60.0  # a Retry-After longer than this is capped: a run should fail visibly, not hang for hours
# What endpoints call a natural end: OpenAI and vLLM "stop", TGI's older "eos_token" and "stop_sequence".
STOP_REASONS = {None, "stop", "eos", "eos_token", "stop_sequence", "end_turn", "tool_calls"}


@dataclass(frozen=True)
class StreamChunk:
    """One event of a streamed completion: new text, and on the last ones the finish reason and token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class HttpBackend:
    """Chat completions from an endpoint, `endpoint.concurrency` requests at a time."""

    def __init__(self, endpoint: EndpointConfig, *, extra_body: dict[str, Any] | None = None,
                 send_seed: bool = True) -> None:
        """`extra_body` joins every request (vLLM's stop_token_ids); `send_seed` False leaves params.seed out."""
        self.endpoint, self.extra_body, self.send_seed = endpoint, dict(extra_body or {}), send_seed
        self.url = f"{endpoint.base_url}/chat/completions"
        self.name = f"{endpoint.base_url} model={endpoint.model}"
        self.identity = f"http:{endpoint.base_url} model={endpoint.model}"
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if endpoint.api_key_env:
            key = os.environ.get(endpoint.api_key_env, "").strip()
            if not key:
                raise UserError(
                    f"api_key_env: the environment variable {endpoint.api_key_env} is not set or empty; "
                    f"export {endpoint.api_key_env}=<your key> before running, or remove api_key_env for an open endpoint"
                )
            self._headers["Authorization"] = f"Bearer {key}"

    def generate(
        self, chats: list[list[dict[str, Any]]], params: GenerationParams, progress: Progress | None = None
    ) -> list[Generation]:
        """One Generation per chat, in input order; failed requests are 'error' Generations."""
        chats = check_chats(chats)
        results: list[Generation | None] = [None] * len(chats)
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.endpoint.concurrency, len(chats))),
                                  thread_name_prefix="adhere-http")
        try:
            futures: dict[Future[Generation], int] = {
                pool.submit(self.complete, chat, params): i for i, chat in enumerate(chats)
            }
            for future in as_completed(futures):  # progress runs here, in the caller's thread
                i = futures[future]
                results[i] = future.result()
                if progress is not None:
                    progress(i, results[i])
        finally:  # on Ctrl-C or a failing progress callback, do not send the requests still queued
            pool.shutdown(wait=True, cancel_futures=True)
        return results  # type: ignore[return-value]  # every slot was filled above

    def complete(self, chat: list[dict[str, str]], params: GenerationParams) -> Generation:
        """One chat completion, retried as the endpoint settings say; never raises."""
        started = time.perf_counter()
        try:
            return self._complete(chat, params, started)
        except Exception as exc:  # noqa: BLE001 -- a bug or an odd transport error must not lose the other answers
            return _failed(f"request to {self.url} failed: {type(exc).__name__}: {exc}", started)

    def _complete(self, chat: list[dict[str, str]], params: GenerationParams, started: float) -> Generation:
        ep = self.endpoint
        # top_p 0 keeps only the most likely token, which is greedy decoding; OpenAI-style servers (vLLM
        # among them) refuse top_p 0 with a 400 ("must be in (0, 1]"), so it is sent as temperature 0.
        temperature, top_p = (0.0, 1.0) if params.top_p == 0 else (params.temperature, params.top_p)
        request_body = {
            **self.extra_body, "model": ep.model, "messages": chat, "max_tokens": params.max_new_tokens,
            "temperature": temperature, "top_p": top_p,
        }
        if self.send_seed:
            request_body["seed"] = params.seed
        body = json.dumps(request_body).encode("utf-8")
        failure, detail = "", ""
        for attempt in range(1, ep.max_tries + 1):
            wait = ep.backoff_s * 2 ** (attempt - 1)
            request = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=ep.timeout_s) as response:
                    payload = response.read()
                return _parse(payload, started)
            except urllib.error.HTTPError as exc:
                failure, detail = f"HTTP {exc.code} from {self.url}", _body_start(exc)
                if exc.code != 429 and exc.code < 500:  # the same request would be refused again
                    return _failed(f"{failure} (not retried){self._auth_hint(exc.code)}: {detail}", started)
                wait = _retry_after(exc.headers, wait)
            except urllib.error.URLError as exc:  # urllib wraps errors while connecting and sending
                if isinstance(exc.reason, TimeoutError):
                    failure, detail = f"timed out after {ep.timeout_s:g} s", ""
                else:
                    failure, detail = f"cannot connect to {self.url}", str(exc.reason)
            except TimeoutError:  # waiting for the response
                failure, detail = f"timed out after {ep.timeout_s:g} s", ""
            except (ConnectionError, http.client.HTTPException) as exc:  # the server hung up mid-response
                failure, detail = f"connection to {self.url} broke", f"{type(exc).__name__}: {exc}"
            if attempt < ep.max_tries:
                time.sleep(wait)
        tries = f"{ep.max_tries} {'try' if ep.max_tries == 1 else 'tries'}"
        return _failed(f"{failure}, {tries}" + (f": {detail}" if detail else ""), started)

    def stream_ids(self, prompt: list[int], params: GenerationParams, *, stops: tuple[str, ...] = (),
                   timeout_s: float | None = None, seed: bool = True) -> Iterator[StreamChunk]:
        """One completion of the token ids `prompt` from /completions, streamed: a StreamChunk per server event.

        For a gateway in front of the endpoint (`adhere serve` with engine vllm): the prompt is already
        rendered, so the server answers exactly those tokens. Not retried (tokens may already have gone to a
        client); a refused request is a RuntimeError with the server's message. Closing the iterator closes
        the connection, which makes vLLM abort the request. `seed` False sends no seed.
        """
        temperature, top_p = (0.0, 1.0) if params.top_p == 0 else (params.temperature, params.top_p)
        request_body = {**self.extra_body, "model": self.endpoint.model, "prompt": prompt,
                        "max_tokens": params.max_new_tokens, "temperature": temperature, "top_p": top_p,
                        "stream": True, "stream_options": {"include_usage": True}, "stop": list(stops)}
        if self.send_seed and seed:  # `seed` False: the server's own randomness
            request_body["seed"] = params.seed
        url = f"{self.endpoint.base_url}/completions"
        request = urllib.request.Request(url, data=json.dumps(request_body).encode("utf-8"),
                                         headers={**self._headers, "Accept": "text/event-stream"}, method="POST")
        try:
            response = urllib.request.urlopen(request, timeout=timeout_s or self.endpoint.timeout_s)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"HTTP {exc.code} from {url}: {_body_start(exc)}") from None
        with response:
            for line in response:  # server-sent events: "data: {json}" lines, blank lines between them
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    return
                event = json.loads(data)
                choice = (event.get("choices") or [{}])[0]
                usage = event.get("usage") or {}
                yield StreamChunk(choice.get("text") or "", choice.get("finish_reason"),
                                  usage.get("prompt_tokens"), usage.get("completion_tokens"))

    def _auth_hint(self, code: int) -> str:
        if code not in (401, 403):
            return ""
        if self.endpoint.api_key_env:
            return f"; check the API key in ${self.endpoint.api_key_env}"
        return "; the endpoint wants an API key: set api_key_env to the name of the variable that holds it"


def _parse(payload: bytes, started: float) -> Generation:
    """A chat completion response as a Generation; a body that is not one is an 'error' Generation."""
    try:
        data = json.loads(payload)
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        reason = choice.get("finish_reason")
        usage = data.get("usage") or {}
        prompt_tokens, completion_tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return _failed(f"the endpoint answered 200 but not with a chat completion: {_clip(payload)}", started)
    seconds = time.perf_counter() - started
    if reason == "length":
        return Generation(text, "length", prompt_tokens, completion_tokens, seconds=seconds)
    if reason in STOP_REASONS:
        return Generation(text, "stop", prompt_tokens, completion_tokens, seconds=seconds)
    return Generation(text, "error", prompt_tokens, completion_tokens, seconds=seconds,
                      error=f"the endpoint ended the answer with finish_reason {reason!r} (e.g. a content filter)")


def _failed(message: str, started: float) -> Generation:
    return Generation("", "error", 0, 0, error=message, seconds=time.perf_counter() - started)


def _body_start(exc: urllib.error.HTTPError) -> str:
    try:
        return _clip(exc.read())
    except (OSError, http.client.HTTPException):
        return "(no body)"


def _clip(payload: bytes) -> str:
    text = " ".join(payload.decode("utf-8", errors="replace").split())
    return (text[:BODY_START] + "...") if len(text) > BODY_START else (text or "(empty body)")


def _retry_after(headers: Any, default: float) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped; `default` without one."""
    value = (headers.get("Retry-After") if headers is not None else None) or ""
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):  # absent or unreadable
            return default
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
