"""A disk cache in front of any backend, so re-running an evaluation report does not regenerate.

    backend = CachedBackend(LocalBackend.load(config.model), "workdir/eval/generations.sqlite")
    backend.generate(chats, params)   # generates and stores
    backend.generate(chats, params)   # reads every answer back (Generation.cached is True)

An answer is keyed by (backend.identity, the chat's role/content messages, every field of
GenerationParams): another model, adapter, endpoint, template or param misses. Only answers
with finish_reason 'stop' or 'length' are stored; an 'error' is tried again next time.

Storage is SQLite (standard library) rather than an append-only JSONL file: each answer is
committed in its own transaction as soon as the backend reports it, so a crash mid-run keeps
every answer committed before it and never leaves a torn record (SQLite's journal rolls a
partial write back, where JSONL needs a reader that skips a half-written last line); a lookup
reads rows by primary key instead of parsing a file that grows with every run; and two
processes (an eval and a server, say) may share one file, WAL mode letting readers go on
while one writes, where two appenders to one JSONL file can interleave long lines.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adhere.errors import UserError
from adhere.generation.backend import Backend, Generation, GenerationParams, Progress, check_chats

SCHEMA = """CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY, identity TEXT NOT NULL, text TEXT NOT NULL, finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, seconds REAL NOT NULL, created TEXT NOT NULL)"""
LOOKUP_CHUNK = 500  # keys per SELECT: under SQLite's 999-variable limit of builds before 3.32
WAIT_FOR_LOCK_S = 30.0  # another process committing holds the write lock for milliseconds


def cache_key(identity: str, chat: list[dict[str, str]], params: GenerationParams) -> str:
    """SHA-256 of the backend identity, the chat (role and content only) and every generation param."""
    plain = [{"role": m["role"], "content": m["content"]} for m in chat]
    blob = json.dumps({"identity": identity, "chat": plain, "params": asdict(params)}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CachedBackend:
    """`backend` with its answers stored in the SQLite file `path`; counts `hits` and `misses`."""

    def __init__(self, backend: Backend, path: str | Path) -> None:
        self.backend = backend
        self.name = backend.name
        self.identity = backend.identity
        self.path = Path(path)
        self.hits = 0
        self.misses = 0
        with closing(self._connect()):  # fail now, not after an hour of generation, if the file is unusable
            pass

    def generate(
        self, chats: list[list[dict[str, Any]]], params: GenerationParams, progress: Progress | None = None
    ) -> list[Generation]:
        """Stored answers for the chats seen before; the backend generates the rest (each distinct chat once)."""
        chats = check_chats(chats)
        keys = [cache_key(self.identity, chat, params) for chat in chats]
        results: list[Generation | None] = [None] * len(chats)
        with closing(self._connect()) as db:
            stored = self._lookup(db, keys)
            todo: dict[str, list[int]] = {}  # key -> every index asking for it, so duplicates generate once
            for i, key in enumerate(keys):
                if key in stored:
                    results[i] = replace(stored[key], cached=True)
                    if progress is not None:
                        progress(i, results[i])
                else:
                    todo.setdefault(key, []).append(i)
            self.hits += len(chats) - sum(len(v) for v in todo.values())
            self.misses += len(todo)
            if todo:
                self._generate(db, chats, params, todo, results, progress)
        return results  # type: ignore[return-value]  # every slot was filled

    def _generate(self, db: sqlite3.Connection, chats: list[list[dict[str, str]]], params: GenerationParams,
                  todo: dict[str, list[int]], results: list[Generation | None], progress: Progress | None) -> None:
        """Ask the backend for the missing answers, committing each one as it arrives."""
        pending = list(todo)
        done: set[int] = set()

        def arrived(j: int, generation: Generation) -> None:
            if j in done:
                return
            done.add(j)
            if generation.finish_reason != "error":
                self._store(db, pending[j], generation)
            for i in todo[pending[j]]:
                results[i] = generation
                if progress is not None:
                    progress(i, generation)

        generated = self.backend.generate([chats[todo[key][0]] for key in pending], params, arrived)
        for j, generation in enumerate(generated):  # a backend that does not report progress
            arrived(j, generation)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=WAIT_FOR_LOCK_S)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: a commit survives a process crash, no fsync each
            db.execute(SCHEMA)
            db.commit()
            return db
        except sqlite3.DatabaseError as exc:
            raise UserError(
                f"{self.path}: cannot use it as the generation cache ({exc}); delete the file to start a new cache, "
                "or give a writable path"
            ) from None
        except OSError as exc:
            raise UserError(f"{self.path}: cannot create the generation cache ({exc}); give a writable path") from None

    def _lookup(self, db: sqlite3.Connection, keys: list[str]) -> dict[str, Generation]:
        found: dict[str, Generation] = {}
        unique = sorted(set(keys))
        for start in range(0, len(unique), LOOKUP_CHUNK):
            chunk = unique[start:start + LOOKUP_CHUNK]
            rows = db.execute(
                "SELECT key, text, finish_reason, prompt_tokens, completion_tokens, seconds FROM generations "
                f"WHERE key IN ({','.join('?' * len(chunk))})", chunk,
            )
            for key, text, reason, prompt_tokens, completion_tokens, seconds in rows:
                found[key] = Generation(text, reason, prompt_tokens, completion_tokens, seconds=seconds)
        return found

    def _store(self, db: sqlite3.Connection, key: str, generation: Generation) -> None:
        with db:  # one transaction per answer: committed, or (after a crash) as if never written
            db.execute(
                "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, self.identity, generation.text, generation.finish_reason, generation.prompt_tokens,
                 generation.completion_tokens, generation.seconds, datetime.now(UTC).isoformat()),
            )
