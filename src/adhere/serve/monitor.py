"""What the server saw: every request in `workdir/serve/monitor.db`, and Prometheus metrics at /metrics.

    sqlite3 runs/<name>/serve/monitor.db "SELECT created, status, finish_reason, latency_s FROM requests"

The database is SQLite in WAL mode, so the dashboard and `adhere feedback export` read while the
server writes. Each request row holds its time, id, model and run id, the prompt messages and the
response (or only their SHA-256 with `serve.store_prompts: hash`), latency, tokens, finish reason,
and the spec's constraint checks on the live response (also one row per check in `checks`, for
pass rates over time). Requests are committed with `synchronous=NORMAL`: in WAL mode a commit
then survives the process being killed, and a burst of requests costs no fsync each. Feedback
goes through its own connection with `synchronous=FULL`, fsynced before it is acknowledged, so
it survives a power cut too.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from adhere.errors import UserError

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, created REAL NOT NULL, model TEXT NOT NULL, run_id TEXT NOT NULL,
    status INTEGER NOT NULL, stream INTEGER NOT NULL, messages TEXT, messages_sha256 TEXT,
    response TEXT, response_sha256 TEXT, latency_s REAL NOT NULL, queue_s REAL, generate_s REAL, first_token_s REAL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, finish_reason TEXT,
    error TEXT, checks TEXT NOT NULL, params TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS requests_created ON requests(created);
CREATE TABLE IF NOT EXISTS checks (
    request_id TEXT NOT NULL REFERENCES requests(id), created REAL NOT NULL, label TEXT NOT NULL,
    passed INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS checks_created ON checks(created);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL,
    completion_id TEXT NOT NULL REFERENCES requests(id), rating TEXT NOT NULL, score INTEGER NOT NULL,
    correction TEXT, comment TEXT);
CREATE INDEX IF NOT EXISTS feedback_completion ON feedback(completion_id);
"""
BUSY_TIMEOUT_S = 30.0  # an export reading while the server checkpoints waits, rather than failing
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)  # seconds: tiny model to 7B on CPU
SPEED_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)  # completion tokens per second of generation


@dataclass
class RequestRecord:
    """One chat completion request as the monitor stores it."""

    id: str
    model: str
    run_id: str
    status: int
    stream: bool
    messages: list[dict[str, str]] | None  # as the client sent them
    response: str | None
    latency_s: float
    created: float = field(default_factory=time.time)
    queue_s: float | None = None  # waiting for the worker
    generate_s: float | None = None  # in the model: from the start of its batch to its last token
    first_token_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    checks: list[tuple[str, bool]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)


def sha256_text(value: Any) -> str:
    """SHA-256 of a string, or of JSON for anything else (messages), as stored in hash-only mode."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def connect(path: Path, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL", readonly: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode, usable from any thread (callers hold a lock)."""
    if readonly:
        if not path.is_file():
            raise UserError(f"{path}: no monitor database; start the server with `adhere serve` and send it requests first")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.row_factory = sqlite3.Row
    return conn


class Metrics:
    """The Prometheus metrics of one server, in a registry of their own (two servers in a process don't mix)."""

    def __init__(self, queue_depth: Callable[[], float], running: Callable[[], float]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.http = Counter("adhere_http_requests", "HTTP requests by endpoint and status code",
                            ["endpoint", "status"], registry=r)
        self.latency = Histogram("adhere_request_latency_seconds", "Answered chat completions, arrival to last token",
                                 ["stream"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("adhere_time_to_first_token_seconds", "Arrival to the first generated token",
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("adhere_tokens", "Tokens read and generated", ["kind"], registry=r)
        self.speed = Histogram("adhere_generation_tokens_per_second", "Completion tokens per second of generation",
                               buckets=SPEED_BUCKETS, registry=r)
        self.completions = Counter("adhere_completions", "Chat completions by finish reason", ["finish_reason"],
                                   registry=r)
        self.checks = Counter("adhere_compliance_checks", "Spec constraint checks on live responses",
                              ["constraint", "result"], registry=r)
        self.pass_rate = Gauge("adhere_compliance_pass_rate", "Share of live responses meeting each constraint",
                               ["constraint"], registry=r)
        self.feedback = Counter("adhere_feedback", "Feedback received by rating", ["rating"], registry=r)
        self.batch_size = Histogram("adhere_batch_size", "Requests generated together in one batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        Gauge("adhere_queue_depth", "Requests waiting for the worker", registry=r).set_function(queue_depth)
        Gauge("adhere_running_requests", "Requests generating now", registry=r).set_function(running)
        self._passed: dict[str, list[int]] = {}  # constraint -> [passed, checked], for the pass-rate gauge

    def observe(self, record: RequestRecord) -> None:
        """Count one chat completion; latency and speed only for answered ones (status 200)."""
        if record.status == 200:
            self.latency.labels(stream=str(record.stream).lower()).observe(record.latency_s)
            if record.first_token_s is not None:
                self.first_token.observe(record.first_token_s)
        self.tokens.labels(kind="prompt").inc(record.prompt_tokens)
        self.tokens.labels(kind="completion").inc(record.completion_tokens)
        if record.finish_reason:
            self.completions.labels(finish_reason=record.finish_reason).inc()
        if record.status == 200 and record.completion_tokens and record.generate_s:
            self.speed.observe(record.completion_tokens / record.generate_s)
        for label, passed in record.checks:
            self.checks.labels(constraint=label, result="pass" if passed else "fail").inc()
            counts = self._passed.setdefault(label, [0, 0])
            counts[0] += int(passed)
            counts[1] += 1
            self.pass_rate.labels(constraint=label).set(counts[0] / counts[1])

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Monitor:
    """The monitor database of a running server, and its metrics."""

    def __init__(self, path: Path, *, store_prompts: Literal["full", "hash"], metrics: Metrics) -> None:
        self.path, self.store_prompts, self.metrics = path, store_prompts, metrics
        self._requests = connect(path, synchronous="NORMAL")
        with self._requests:
            self._requests.executescript(SCHEMA)
            self._requests.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._feedback = connect(path, synchronous="FULL")
        self._lock = threading.Lock()  # one writer at a time, over both connections

    def record(self, rec: RequestRecord) -> None:
        """Store one request and count it in the metrics; blocking (call it from a worker thread)."""
        full = self.store_prompts == "full"
        checks = [[label, passed] for label, passed in rec.checks]
        row = (
            rec.id, rec.created, rec.model, rec.run_id, rec.status, int(rec.stream),
            json.dumps(rec.messages, ensure_ascii=False) if full and rec.messages is not None else None,
            sha256_text(rec.messages) if rec.messages is not None else None,
            rec.response if full else None, sha256_text(rec.response) if rec.response is not None else None,
            rec.latency_s, rec.queue_s, rec.generate_s, rec.first_token_s, rec.prompt_tokens, rec.completion_tokens,
            rec.finish_reason, rec.error, json.dumps(checks), json.dumps(rec.params),
        )
        with self._lock, self._requests:
            self._requests.execute(f"INSERT INTO requests VALUES ({', '.join('?' * len(row))})", row)
            self._requests.executemany(
                "INSERT INTO checks VALUES (?, ?, ?, ?)", [(rec.id, rec.created, label, int(p)) for label, p in rec.checks]
            )
        self.metrics.observe(rec)

    def has_request(self, request_id: str) -> bool:
        """Whether a request with this id is recorded."""
        with self._lock:
            return self._requests.execute("SELECT 1 FROM requests WHERE id = ?", (request_id,)).fetchone() is not None

    def add_feedback(self, completion_id: str, rating: str | int, correction: str | None, comment: str | None) -> dict[str, Any]:
        """Store feedback durably (fsynced) and return it with its id; the caller acknowledges only after this."""
        label, score = normalize_rating(rating)
        created = time.time()
        with self._lock, self._feedback:
            cursor = self._feedback.execute(
                "INSERT INTO feedback (created, completion_id, rating, score, correction, comment) VALUES (?, ?, ?, ?, ?, ?)",
                (created, completion_id, label, score, correction, comment),
            )
        self.metrics.feedback.labels(rating=label).inc()
        return {"id": f"feedback-{cursor.lastrowid}", "object": "feedback", "created": int(created),
                "completion_id": completion_id, "rating": label, "score": score}

    def close(self) -> None:
        """Close both connections (the WAL is checkpointed by the last one)."""
        with self._lock:
            self._feedback.close()
            self._requests.close()


def normalize_rating(rating: str | int) -> tuple[str, int]:
    """('up' | 'down' | 'neutral', score 1-5): 'up' is 5, 'down' 1; 4-5 approve, 1-2 reject, 3 is neutral."""
    if rating == "up":
        return "up", 5
    if rating == "down":
        return "down", 1
    score = int(rating)
    return ("up" if score >= 4 else "down" if score <= 2 else "neutral"), score
