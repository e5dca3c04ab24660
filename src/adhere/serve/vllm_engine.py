"""The gateway's engine for `serve.engine: vllm`: each request forwarded to a vLLM server adhere owns.

    engine = VllmEngine(max_queue=64)
    engine.start(lambda: VllmBackend(model, cfg.vllm, log_path=run_dir / "vllm.log", max_num_seqs=8))
    engine.submit(Job(prompt=engine.encode(chat), params=..., stops=(), stream=True, deadline=..., sink=...))

The same interface as `Engine` (the local worker), so `Completion`, the monitor, the spec checks,
auth and limits are one code path for both engines. The prompt is rendered here, with the chat
template of training, and sent to vLLM's /v1/completions as token ids, so vLLM answers exactly the
tokens the local engine would read. vLLM batches continuously: a request joins the running batch
at the next step (up to serve.batch_size, its --max-num-seqs) instead of waiting for a batch to end.
Each admitted request streams in a thread of its own (one per serve.max_queue), and every chunk
vLLM sends is handed to the client as it comes. A request that is cancelled, or passes its
deadline, closes its connection, which makes vLLM abort it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from adhere.serve.engine import Admission, FinishReason, Job, deliver, outcome

log = logging.getLogger("adhere.serve")


class VllmEngine:
    """Jobs forwarded to a vLLM server: `start` starts the server (in a thread), `close` stops it."""

    def __init__(self, *, batch_size: int, max_queue: int) -> None:
        self.batch_size, self.max_queue = batch_size, max_queue
        self.on_batch: Callable[[int], None] | None = None  # unused: vLLM's batches are its own
        self.backend: Any = None  # the VllmBackend, once its server is ready
        self.load_error: BaseException | None = None
        self.admission = Admission(max_queue)
        self._starting: Any = None  # the VllmBackend while its server starts, so close() can stop it
        self._jobs: set[Job] = set()
        self._lock = threading.Lock()
        self._closing = False
        self._pool = ThreadPoolExecutor(max_workers=max_queue, thread_name_prefix="adhere-vllm")
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        """Whether the vLLM server is up and requests are forwarded."""
        return self.backend is not None and not self._closing and self.backend.running

    @property
    def max_positions(self) -> int:
        """Most tokens the served model reads, prompt and answer together."""
        return int(self.backend.max_positions)

    def start(self, load: Callable[[], Any], on_failure: Callable[[BaseException], None] | None = None) -> None:
        """Make the VllmBackend and start its server in a thread, so the gateway answers /health meanwhile."""
        if self._thread is not None:
            raise RuntimeError("the engine is already started")
        self._thread = threading.Thread(target=self._load, args=(load, on_failure), name="adhere-vllm-start",
                                        daemon=True)
        self._thread.start()

    def _load(self, load: Callable[[], Any], on_failure: Callable[[BaseException], None] | None) -> None:
        try:
            backend = self._starting = load()
            if not self._closing:
                backend.start()
        except BaseException as exc:  # noqa: BLE001  (a UserError naming the log, or a bug)
            if self._starting is not None:
                self._starting.close()
            self.load_error = exc
            log.error("starting the vLLM server failed: %s", exc)
            if on_failure is not None:
                on_failure(exc)
            return
        if self._closing:  # closed while starting: close() may have run before the server existed
            backend.close()
            return
        self.backend = backend
        log.info("vLLM server ready in %.0f s (log: %s)", backend.server.start_seconds, backend.log_path)

    def encode(self, chat: list[dict[str, str]]) -> list[int]:
        """Prompt token ids, rendered with the chat template of training."""
        with self._lock:  # handlers encode in threads; a fast tokenizer refuses concurrent use (see Engine)
            return self.backend.encode(chat)

    def depth(self) -> int:
        """Requests vLLM holds waiting: those beyond its --max-num-seqs (serve.batch_size)."""
        return max(0, len(self._jobs) - self.batch_size)

    def running(self) -> int:
        """Requests vLLM is generating now."""
        return min(len(self._jobs), self.batch_size)

    def submit(self, job: Job) -> None:
        """Forward a job; raise QueueFull if `max_queue` requests are already admitted."""
        self.admission.admit()
        with self._lock:
            self._jobs.add(job)
        try:
            self._pool.submit(self._run, job)
        except RuntimeError:  # the pool is shut down: the server is closing
            self._finish(job, "cancelled")

    def cancel(self, job: Job, reason: FinishReason = "cancelled") -> None:
        """End a job at its next chunk (its thread then closes the connection, and vLLM aborts it)."""
        job.cancel_reason, job.cancelled = reason, True

    def close(self, timeout: float = 10.0) -> None:
        """End every job, stop the vLLM server (also one still starting) and wait for the threads."""
        self._closing = True
        for job in list(self._jobs):
            job.cancelled = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        for backend in {id(b): b for b in (self.backend, self._starting) if b is not None}.values():
            backend.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, job: Job) -> None:
        """Stream one job's answer from vLLM; every way it ends goes through _finish."""
        job.started = time.monotonic()
        if job.cancelled or job.started > job.deadline:
            self._finish(job, job.cancel_reason if job.cancelled else "timeout")
            return
        reason: FinishReason = "length"
        try:
            chunks = self.backend.stream(job.prompt, job.params, job.stops, seeded=job.seeded,
                                         timeout_s=max(job.deadline - job.started, 0.1))
        except Exception as exc:  # noqa: BLE001  (the server is gone)
            self._finish(job, "error", error=f"generation failed: {exc}")
            return
        try:
            for chunk in chunks:
                if chunk.text:
                    job.first_token = job.first_token or time.monotonic()
                    job.completion_tokens += 1  # one chunk per engine step: a token (vLLM without speculation)
                    job.text += chunk.text
                    if job.stream:
                        deliver(job, "delta", chunk.text)
                        job.emitted = len(job.text)
                if chunk.completion_tokens is not None:  # the usage event: vLLM's own counts, end-of-turn included
                    job.completion_tokens = chunk.completion_tokens
                if chunk.finish_reason is not None:
                    reason = "length" if chunk.finish_reason == "length" else "stop"
                if job.cancelled or time.monotonic() > job.deadline:
                    reason = job.cancel_reason if job.cancelled else "timeout"
                    break
        except Exception as exc:  # noqa: BLE001  (refused, died, timed out: answer the client, keep serving)
            log.warning("vLLM request failed: %s", exc)
            reason = job.cancel_reason if job.cancelled else "timeout" if time.monotonic() > job.deadline else "error"
            self._finish(job, reason, error=f"generation failed: {type(exc).__name__}: {str(exc)[:200]}")
            return
        finally:
            chunks.close()  # closes the connection: vLLM aborts a request that has not ended
        self._finish(job, reason)

    def _finish(self, job: Job, reason: FinishReason, error: str | None = None) -> None:
        if job.done:
            return
        job.done = True
        with self._lock:
            self._jobs.discard(job)
        self.admission.release(None if job.started is None else time.monotonic() - job.enqueued)
        deliver(job, "done", outcome(job, reason, error))
