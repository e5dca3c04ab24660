"""What the three generators share: the ledger, the context, and sampling until an answer passes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from adhere.data import decontam
from adhere.data.records import Rejection
from adhere.generation import Generation, GenerationParams
from adhere.synth.seeds import Seed
from adhere.synth.teacher import Teacher, not_sent

if TYPE_CHECKING:
    from adhere.config import ProjectConfig
    from adhere.data.decontam import EvalIndex
    from adhere.spec.config import SpecConfig
    from adhere.synth.config import SynthConfig

Record = dict[str, Any]


class Ledger:
    """Every candidate and where it went."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.kept: list[Record] = []
        self.rejected: list[dict[str, Any]] = []
        self.considered = 0  # candidates the generators created; each is kept or rejected exactly once

    def add(self, count: int = 1) -> None:
        """Count new candidates (proposals, prompts with constraints, records to rewrite)."""
        self.considered += count

    def keep(self, record: Record) -> bool:
        """Keep a finished record, or drop it as over_target once the target is met; True if kept."""
        if self.full:
            self.drop("over_target", f"synth.target={self.target} records were already kept", record)
            return False
        self.kept.append(record)
        return True

    def drop(self, rule: str, reason: str, candidate: Any) -> None:
        self.rejected.append({"rule": rule, "reason": reason, "candidate": candidate})

    @property
    def full(self) -> bool:
        return len(self.kept) >= self.target


@dataclass
class Context:
    """What a generator needs: the config, the teacher, the seeds, the decontamination index, the ledger."""

    config: ProjectConfig
    teacher: Teacher
    seeds: list[Seed]
    index: EvalIndex
    ledger: Ledger
    stats: dict[str, Any] = field(default_factory=dict)  # the generator's own counters, for stats.json

    @property
    def synth(self) -> SynthConfig:
        assert self.config.synth is not None
        return self.config.synth

    def params(self, sample: int = 0) -> GenerationParams:
        """Decoding settings; sample k of a prompt gets seed + k, so repeated samples differ and replay alike."""
        s = self.synth
        return GenerationParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                                seed=s.seed + sample)

    def chat(self, prompt: str) -> list[dict[str, str]]:
        """The chat a record's answer is asked with: the spec's system prompt (as training will use), then the prompt."""
        system = self.config.spec.system_prompt
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]

    def record(self, generator: str, prompt: str, response: str, seed: Seed, params: GenerationParams,
               **meta: Any) -> Record:
        """A canonical record whose meta says how it was made: teacher, params, seed task, filter results."""
        provenance = {
            "synthetic": True, "generator": generator, "teacher": self.teacher.name,
            "teacher_identity": self.teacher.identity, "params": asdict(params),
            "seed_task": seed.provenance(self.synth.seed_file), **meta,
        }
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return {"messages": messages, "meta": provenance}

    def contaminated(self, *texts: str) -> Rejection | None:
        """The rejection when any text shares an n-gram with an evaluation prompt."""
        for text in texts:
            problem = decontam.check({"messages": [{"role": "user", "content": text}]}, self.index)
            if problem:
                return problem
        return None


def answer_problem(generation: Generation) -> Rejection | None:
    """Why a teacher answer is unusable (budget, error, empty, cut off), or None."""
    if not_sent(generation):
        return Rejection("budget_exhausted", "not sent to the teacher: the synth budget was spent")
    if generation.finish_reason == "error":
        return Rejection("teacher_error", generation.error or "the teacher failed")
    if not generation.text.strip():
        return Rejection("empty_response", "the teacher answered with nothing")
    if generation.finish_reason == "length":
        return Rejection("truncated", f"cut off at synth.max_new_tokens ({generation.completion_tokens} tokens)")
    return None


def spec_failures(spec: SpecConfig, response: str) -> list[str]:
    """Labels of the spec's checks the response fails: JSON output format, schema, each constraint."""
    from adhere.spec.constraints import json_schema, json_valid

    failed = []
    if spec.output.format == "json" and not json_valid(response):
        failed.append("json_valid")
    elif spec.output.schema_ is not None and not json_schema(response, schema=spec.output.schema_):
        failed.append("json_schema(output.schema)")
    return failed + [c.label for c in spec.constraints if not c.check(response)]


@dataclass
class Attempt:
    """One candidate sampled until an answer passes: its prompt, its check and what was tried."""

    chat: list[dict[str, str]]
    check: Callable[[str], list[str]]  # labels of the failed checks; empty means the answer passes
    payload: Any  # the generator's own data, handed back with the passing answer
    tries: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)  # unusable answers by rule
    passed: tuple[str, int] | None = None  # (answer, sample index)


def sample_until_pass(ctx: Context, attempts: list[Attempt], samples: int) -> None:
    """Ask the teacher up to `samples` times per attempt (sample k with seed + k); stop asking once one passes."""
    for k in range(samples):
        pending = [a for a in attempts if a.passed is None]
        if not pending:
            return
        answers = ctx.teacher.generate([a.chat for a in pending], ctx.params(k))
        for attempt, answer in zip(pending, answers):
            problem = answer_problem(answer)
            if problem is not None:
                attempt.problems[problem.rule] += 1
                continue
            attempt.tries += 1
            failed = attempt.check(answer.text)
            attempt.failed.update(failed)
            if not failed:
                attempt.passed = (answer.text, k)


def failure(attempt: Attempt, samples: int) -> Rejection:
    """Why an attempt kept nothing: the budget, or no answer passing its checks, or only unusable answers."""
    if attempt.problems["budget_exhausted"]:
        return Rejection("budget_exhausted", "the synth budget was spent before an answer passed")
    if attempt.tries:
        fails = ", ".join(f"{label} x{n}" for label, n in attempt.failed.most_common())
        return Rejection("no_passing_response", f"none of {attempt.tries} answers passed ({fails})")
    rule, _ = attempt.problems.most_common(1)[0]
    return Rejection(rule, f"all {samples} samples unusable: " + ", ".join(f"{r} x{n}" for r, n in attempt.problems.items()))
