"""The worker: one model in memory answering many clients, token by token.

    engine = Engine(batch_size=8, max_queue=64)
    engine.start(lambda: LocalBackend.load(config.model, adapter=adapter))   # loads in the worker thread
    engine.submit(Job(prompt=engine.encode(chat), params=..., stops=(), stream=True, deadline=..., sink=...))

Requests wait in a bounded queue (`submit` raises QueueFull once `max_queue` requests are
admitted, running or waiting) and one worker thread runs them. It takes the oldest request and
every waiting one with the same decoding settings, up to `batch_size`, and runs them through
`LocalBackend.generate_ids` (its left padding, KV cache, greedy or seeded sampling), so a served
answer is the answer evaluation measured. Its per-step hook calls `Engine.advance` after every
token: it decodes each row's new token, hands the text to streaming clients,
and ends a row on its end-of-turn token, a stop sequence, its own max_tokens, its deadline or its
client leaving. An ended row hands back its slot and its answer at once, and the batch stops
when its last row has.
"""

from __future__ import annotations

import logging
import math
import secrets
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from adhere.generation.backend import GenerationParams

log = logging.getLogger("adhere.serve")

FinishReason = Literal["stop", "length", "cancelled", "timeout", "error"]
Sink = Callable[[str, Any], None]  # ("delta", text) while streaming, then ("done", Outcome) once
MAX_RETRY_AFTER_S = 60  # a client told to wait longer would rather fail over
RECENT_JOBS = 32  # finished requests whose durations estimate Retry-After


@dataclass
class Outcome:
    """How a request ended: its text, why it ended, its token counts and where its time went."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    queue_s: float  # from submit to the start of its batch (to the end, if it never ran)
    generate_s: float  # from the start of its batch to its end
    first_token_s: float | None  # from submit to its first token
    error: str | None = None


@dataclass(eq=False)
class Job:
    """One request for the worker, and the state of its row while it generates."""

    prompt: list[int]
    params: GenerationParams
    stops: tuple[str, ...]
    stream: bool
    deadline: float  # time.monotonic() after which it ends with 'timeout'
    sink: Sink
    seeded: bool = True  # False: sampled with a seed drawn per batch (the request gave none)
    enqueued: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    cancel_reason: FinishReason = "cancelled"  # or 'timeout', when the handler gave up waiting
    done: bool = False
    started: float | None = None
    first_token: float | None = None
    tokens: list[int] = field(default_factory=list)  # generated, the end-of-turn token left out
    completion_tokens: int = 0
    text: str = ""
    emitted: int = 0  # characters of `text` already sent to the client
    prefix_offset: int = 0  # incremental decoding window, as vLLM's detokenizer keeps it
    read_offset: int = 0

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys may share a batch: all greedy, or sampled with the same settings."""
        p = self.params
        if p.temperature == 0:
            return ("greedy",)
        return ("sampled", p.temperature, p.top_p, p.seed if self.seeded else None)


class QueueFull(Exception):
    """Raised by `submit` when `max_queue` requests are admitted; `retry_after_s` estimates the wait."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"queue full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Admission:
    """At most `limit` requests admitted at once, running or waiting; Retry-After from recent requests' times."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0
        self._recent: deque[float] = deque(maxlen=RECENT_JOBS)
        self._lock = threading.Lock()

    def admit(self) -> None:
        """Take a slot, or raise QueueFull with an estimate of the wait."""
        with self._lock:
            if self.count >= self.limit:
                raise QueueFull(self._retry_after())
            self.count += 1

    def release(self, seconds: float | None) -> None:
        """Free a slot; `seconds` is how long the request took from admission (None if it never ran)."""
        with self._lock:
            self.count -= 1
            if seconds is not None:
                self._recent.append(seconds)

    def _retry_after(self) -> int:
        """Seconds until a slot is likely free: the median recent request time, 1 to 60."""
        typical = statistics.median(self._recent) if self._recent else 1.0
        return int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(typical))))


def outcome(job: Job, reason: FinishReason, error: str | None = None) -> Outcome:
    """How `job` ended now, with `reason`: its text (none on an error), token counts and timings."""
    now = time.monotonic()
    started = job.started or now
    return Outcome(
        text=job.text if reason != "error" else "", finish_reason=reason, prompt_tokens=len(job.prompt),
        completion_tokens=job.completion_tokens, queue_s=started - job.enqueued, generate_s=now - started,
        first_token_s=None if job.first_token is None else job.first_token - job.enqueued, error=error,
    )


class Engine:
    """A queue of Jobs and the worker thread that runs them on one loaded LocalBackend."""

    def __init__(self, *, batch_size: int, max_queue: int, on_batch: Callable[[int], None] | None = None) -> None:
        self.batch_size, self.max_queue, self.on_batch = batch_size, max_queue, on_batch
        self.backend: Any = None  # the LocalBackend, once loaded
        self.load_error: BaseException | None = None
        self._cv = threading.Condition()
        self._pending: deque[Job] = deque()
        self._running: list[Job] = []
        self.admission = Admission(max_queue)
        self._closing = False
        # Fast tokenizers refuse concurrent use ("Already borrowed") when one call changes padding or
        # truncation; handlers encode and the worker decodes, so every call takes this lock.
        self._tokenizer_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        """Whether the model is loaded and the worker takes requests."""
        return self.backend is not None and not self._closing

    def start(self, load: Callable[[], Any], on_failure: Callable[[BaseException], None] | None = None) -> None:
        """Load the backend in the worker thread (so the server answers /health meanwhile), then serve."""
        if self._thread is not None:
            raise RuntimeError("the engine is already started; one worker owns the model")
        self._thread = threading.Thread(target=self._work, args=(load, on_failure), name="adhere-worker", daemon=True)
        self._thread.start()

    @property
    def max_positions(self) -> int:
        """Most tokens the loaded model reads, prompt and answer together."""
        return int(self.backend.max_positions)

    def encode(self, chat: list[dict[str, str]]) -> list[int]:
        """Prompt token ids, rendered by the backend exactly as training rendered them."""
        with self._tokenizer_lock:
            return self.backend.encode(chat)

    def depth(self) -> int:
        """Requests waiting for the worker."""
        return len(self._pending)

    def running(self) -> int:
        """Requests generating now."""
        return sum(not job.done for job in list(self._running))

    def submit(self, job: Job) -> None:
        """Queue a job; raise QueueFull if `max_queue` requests are already admitted."""
        self.admission.admit()
        with self._cv:
            self._pending.append(job)
            self._cv.notify()

    def cancel(self, job: Job, reason: FinishReason = "cancelled") -> None:
        """The client is gone (or out of time): a waiting job ends now, a running one at its next token."""
        job.cancel_reason, job.cancelled = reason, True
        with self._cv:
            waiting = job in self._pending
            if waiting:
                self._pending.remove(job)
        if waiting:
            self._finish(job, reason)

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking jobs, end every waiting and running one, and wait for the worker."""
        with self._cv:
            self._closing = True
            waiting, self._pending = list(self._pending), deque()
            self._cv.notify_all()
        for job in waiting:
            self._finish(job, "cancelled")
        for job in list(self._running):
            job.cancelled = True
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the worker thread

    def _work(self, load: Callable[[], Any], on_failure: Callable[[BaseException], None] | None) -> None:
        try:
            backend = load()
        except BaseException as exc:  # noqa: BLE001  (a UserError for the person starting the server, or a bug)
            self.load_error = exc
            log.error("loading the model failed: %s", exc)
            if on_failure is not None:
                on_failure(exc)
            return
        self.backend = backend
        while (batch := self._take()) is not None:
            self._running = batch
            self._run_batch(batch)
            self._running = []

    def _take(self) -> list[Job] | None:
        """The oldest live job and the waiting ones that may share its batch; None when closing."""
        while True:
            expired: list[tuple[Job, FinishReason]] = []
            with self._cv:
                while not self._pending and not self._closing:
                    self._cv.wait()
                if self._closing:
                    return None
                now = time.monotonic()
                batch: list[Job] = []
                for job in list(self._pending):
                    if job.cancelled or now > job.deadline:
                        self._pending.remove(job)
                        expired.append((job, job.cancel_reason if job.cancelled else "timeout"))
                    elif len(batch) < self.batch_size and (not batch or job.batch_key == batch[0].batch_key):
                        self._pending.remove(job)
                        batch.append(job)
            for job, reason in expired:
                self._finish(job, reason)
            if batch:
                return batch

    def _run_batch(self, jobs: list[Job]) -> None:
        """Generate for a batch with LocalBackend's batching and sampling; rows end one by one through `advance`."""
        backend, started = self.backend, time.monotonic()
        if self.on_batch is not None:
            self.on_batch(len(jobs))
        for job in jobs:
            job.started = started
        params = jobs[0].params  # the batch key makes temperature, top_p and seed the same for every row
        seed = params.seed if jobs[0].seeded or params.temperature == 0 else secrets.randbits(62)
        batch = replace(params, seed=seed, max_new_tokens=max(job.params.max_new_tokens for job in jobs))
        try:
            backend.generate_ids([job.prompt for job in jobs], batch,
                                 on_step=lambda newest: [self.advance(job, t) for job, t in zip(jobs, newest)])
        except Exception as exc:  # out of memory, a bug: answer every row, keep serving
            log.exception("generation failed for a batch of %d", len(jobs))
            for job in jobs:
                if not job.done:
                    self._finish(job, "error", error=f"generation failed: {type(exc).__name__}")
            return
        for job in jobs:  # rows that reached the model's last position
            if not job.done:
                self._finish(job, "length")

    def advance(self, job: Job, token: int) -> bool:
        """Take one new token for a row; True when the row has ended."""
        if job.done:
            return True
        now = time.monotonic()
        job.first_token = job.first_token or now
        job.completion_tokens += 1  # the end-of-turn token counts, as in LocalBackend
        if token in self.backend.stop_ids:
            self._finish(job, "stop")
            return True
        job.tokens.append(token)
        before = len(job.text)
        job.text += self._decode_step(job)
        cut = _find_stop(job.text, job.stops, before)
        if cut is not None:
            job.text = job.text[:cut]
            self._finish(job, "stop", cut=True)
        elif job.completion_tokens >= job.params.max_new_tokens:
            self._finish(job, "length")
        elif job.cancelled:
            self._finish(job, job.cancel_reason)
        elif now > job.deadline:
            self._finish(job, "timeout")
        else:
            self._emit(job, len(job.text) - _held_back(job.text, job.stops))
        return job.done

    def _decode_step(self, job: Job) -> str:
        """The text the newest token adds; '' while it ends inside a multi-byte character."""
        decode = self.backend.tokenizer.decode
        with self._tokenizer_lock:
            prefix = decode(job.tokens[job.prefix_offset:job.read_offset], skip_special_tokens=True,
                            clean_up_tokenization_spaces=False)
            new = decode(job.tokens[job.prefix_offset:], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if len(new) > len(prefix) and not new.endswith("\ufffd"):
            job.prefix_offset, job.read_offset = job.read_offset, len(job.tokens)
            return new[len(prefix):]
        return ""

    def _emit(self, job: Job, end: int) -> None:
        if job.stream and end > job.emitted:
            deliver(job, "delta", job.text[job.emitted:end])
            job.emitted = end

    def _finish(self, job: Job, reason: FinishReason, *, cut: bool = False, error: str | None = None) -> None:
        """End a job: settle its text, send the rest of it, free its slot, hand over its Outcome."""
        if job.done:
            return
        if reason in ("stop", "length") and not cut and job.tokens:
            with self._tokenizer_lock:  # the whole decode is authoritative, as in LocalBackend._finish
                whole = self.backend.tokenizer.decode(job.tokens, skip_special_tokens=True,
                                                      clean_up_tokenization_spaces=False)
            if whole.startswith(job.text[:job.emitted]):
                job.text = whole
        if reason in ("stop", "length"):
            self._emit(job, len(job.text))
        job.done = True
        ended = outcome(job, reason, error)
        self.admission.release(None if job.started is None else time.monotonic() - job.enqueued)
        deliver(job, "done", ended)


def deliver(job: Job, kind: str, value: Any) -> None:
    try:
        job.sink(kind, value)
    except Exception:  # noqa: BLE001  (the handler's event loop has closed at shutdown; nobody is waiting)
        log.debug("dropped %s for a request whose handler is gone", kind)


def _find_stop(text: str, stops: tuple[str, ...], before: int) -> int | None:
    """Where the first stop sequence starts in `text`, searching only where new text could complete one."""
    hits = [i for s in stops if (i := text.find(s, max(0, before - len(s) + 1))) >= 0]
    return min(hits) if hits else None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of `text` that may be the start of a stop sequence, so are not sent yet."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest
