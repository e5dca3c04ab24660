"""The teacher: a cached generation backend behind a budget that stops the run, never overspends.

    with opened_teacher(config) as teacher:
        answers = teacher.generate(chats, params)   # one Generation per chat; unsent ones are `not_sent`
        teacher.budget.stopped                      # why it stopped, or None

The backend is the evaluation's (`adhere.generation.refs.opened`: base, folder or endpoint) with its
SQLite cache in `workdir/synth/cache/`. Answers read back from the cache cost nothing, so a run
cut off by the budget, Ctrl-C or a crash resumes where it stopped: every request is seeded and
deterministic, the rerun asks the same questions, and only the new ones reach the teacher.

The budget bounds the answers a data set is built from, cached or new: rerunning a project whose
budget ran out (`adhere synth` then `adhere run`) reads the same answers back and stops at the same
place, instead of buying another budget's worth; raising the budget continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adhere.generation import Generation, GenerationParams

if TYPE_CHECKING:
    from adhere.config import ProjectConfig
    from adhere.synth.config import BudgetConfig

NOT_SENT = "not sent: the synth budget is spent"


@dataclass
class Budget:
    """The answers this run used, against synth.budget: those the teacher generated now and those read from the cache."""

    max_calls: int = 0
    max_tokens: int = 0
    calls: int = 0  # chats the teacher generated (cache misses): what this run paid for
    tokens: int = 0  # their prompt + completion tokens
    cached: int = 0  # answers read back from the cache, free now, paid for by an earlier run
    cached_tokens: int = 0  # their prompt + completion tokens
    errors: int = 0  # answers that failed (timeouts, HTTP errors, a crashing model)
    stopped: str | None = None

    @classmethod
    def of(cls, config: BudgetConfig) -> Budget:
        return cls(max_calls=config.max_calls, max_tokens=config.max_tokens)

    def room(self) -> int | None:
        """Chats that may still be sent (None: no call limit); sets `stopped` once nothing may."""
        calls, tokens = self.calls + self.cached, self.tokens + self.cached_tokens
        if self.max_tokens and tokens >= self.max_tokens:
            self.stopped = f"budget.max_tokens={self.max_tokens} reached ({tokens} tokens{self._cache_part()})"
        elif self.max_calls and calls >= self.max_calls:
            self.stopped = f"budget.max_calls={self.max_calls} reached{self._cache_part()}"
        if self.stopped:
            return 0
        return self.max_calls - calls if self.max_calls else None

    def _cache_part(self) -> str:
        return f"; {self.cached} of the answers from the cache" if self.cached else ""

    def spend(self, generation: Generation) -> None:
        if generation.cached:
            self.cached += 1
            self.cached_tokens += generation.prompt_tokens + generation.completion_tokens
            return
        self.calls += 1
        self.tokens += generation.prompt_tokens + generation.completion_tokens
        if generation.finish_reason == "error":
            self.errors += 1

    def summary(self) -> dict[str, Any]:
        return {"calls": self.calls, "tokens": self.tokens, "cached": self.cached, "cached_tokens": self.cached_tokens,
                "errors": self.errors,
                "max_calls": self.max_calls, "max_tokens": self.max_tokens, "stopped": self.stopped}


class Teacher:
    """`backend` (a CachedBackend) asked `batch_size` chats at a time while the budget lasts."""

    def __init__(self, backend: Any, budget: Budget, batch_size: int, log: Callable[[str], None] | None = None) -> None:
        self.backend = backend
        self.budget = budget
        self.batch_size = batch_size
        self.log = log  # told after each batch the teacher generated: a local teacher takes minutes a batch
        self.name = backend.name
        self.identity = backend.identity

    def generate(self, chats: list[list[dict[str, str]]], params: GenerationParams) -> list[Generation]:
        """One Generation per chat; once the budget is spent the rest are 'error' Generations with NOT_SENT."""
        out: list[Generation] = []
        while len(out) < len(chats):
            room = self.budget.room()
            if room == 0:
                out += [Generation("", "error", 0, 0, error=NOT_SENT) for _ in chats[len(out):]]
                break
            # Never more chats than calls left: the cache may answer some, but none may overspend.
            size = self.batch_size if room is None else min(self.batch_size, room)
            batch = self.backend.generate(chats[len(out):len(out) + size], params)
            for generation in batch:
                self.budget.spend(generation)
                out.append(generation)
            if self.log is not None and not all(g.cached for g in batch):
                b = self.budget
                self.log(f"teacher: {b.calls:,} calls, {b.tokens:,} tokens so far ({b.cached:,} answers from the cache)")
        return out


def not_sent(generation: Generation) -> bool:
    """Whether the budget stopped this chat before it reached the teacher."""
    return generation.finish_reason == "error" and generation.error == NOT_SENT


@contextmanager
def opened_teacher(config: ProjectConfig, log: Callable[[str], None] | None = None) -> Iterator[Teacher]:
    """The configured teacher with its cache in workdir/synth/cache/ and a fresh budget."""
    from adhere.generation.refs import opened

    synth = config.synth
    assert synth is not None
    with opened(synth.teacher, config, config.stage_dir("synth") / "cache", batch_size=synth.batch_size) as backend:
        yield Teacher(backend, Budget.of(synth.budget), synth.batch_size, log)
