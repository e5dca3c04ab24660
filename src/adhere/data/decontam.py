"""Decontamination: no training prompt may share a long word n-gram with an evaluation prompt.

A training record is contaminated when its prompt contains any `n`-word
sequence (13 by default, as lm-evaluation-harness) of an evaluation prompt. An
evaluation prompt shorter than `n` words counts as one sequence of its own
length when it has at least `MIN_SHORT` words, and otherwise only when a
training prompt equals it: two-word prompts like "Summarize this" would
otherwise flag every training prompt that contains them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from adhere.data.records import Rejection, prompt_text
from adhere.errors import UserError, require_files

if TYPE_CHECKING:
    from adhere.config import ProjectConfig

WORD = re.compile(r"\w+")
MIN_SHORT = 8


def words(text: str) -> tuple[str, ...]:
    """Case-folded words, the unit of every n-gram here."""
    return tuple(WORD.findall(text.casefold()))


@dataclass
class EvalIndex:
    """The n-grams of every evaluation prompt, each mapped to where it came from."""

    n: int
    grams: dict[tuple[str, ...], str] = field(default_factory=dict)
    short: dict[int, dict[tuple[str, ...], str]] = field(default_factory=dict)
    exact: dict[tuple[str, ...], str] = field(default_factory=dict)
    prompts: int = 0

    def add(self, text: str, label: str) -> None:
        """Index one evaluation prompt."""
        seq = words(text)
        if not seq:
            return
        self.prompts += 1
        if len(seq) >= self.n:
            for i in range(len(seq) - self.n + 1):
                self.grams.setdefault(seq[i : i + self.n], label)
        elif len(seq) >= MIN_SHORT:
            self.short.setdefault(len(seq), {}).setdefault(seq, label)
        else:
            self.exact.setdefault(seq, label)

    def match(self, text: str) -> tuple[str, str] | None:
        """(label, the shared words) for the first evaluation prompt `text` overlaps, or None."""
        seq = words(text)
        if seq in self.exact:
            return self.exact[seq], " ".join(seq)
        for size, table in [(self.n, self.grams), *self.short.items()]:
            for i in range(len(seq) - size + 1):
                gram = seq[i : i + size]
                if gram in table:
                    return table[gram], " ".join(gram)
        return None


def check(record: dict[str, Any], index: EvalIndex) -> Rejection | None:
    """A rejection when the record's prompt overlaps an evaluation prompt."""
    hit = index.match(prompt_text(record))
    if hit is None:
        return None
    label, shared = hit
    shown = shared if len(shared) <= 80 else shared[:77] + "..."
    return Rejection("contaminated", f"prompt shares a {len(shared.split())}-word sequence with {label}: {shown!r}")


def benchmark_files(config: ProjectConfig) -> dict[str, Path]:
    """The benchmarks training prompts must not overlap, by config key: data.decontam.targets, and every file
    the project evaluates on (eval.suites): IFEval's prompts (eval.ifeval_file, or the 541 shipped with adhere)
    and the custom suite's eval.custom_file. The held_out and judge suites ask the eval split, checked anyway."""
    from adhere.eval.ifeval.suite import BUILTIN_SUITE

    files = {f"data.decontam.targets[{i}]": Path(t) for i, t in enumerate(config.data.decontam.targets)}
    if "ifeval" in config.eval.suites:
        files["eval.ifeval_file"] = Path(config.eval.ifeval_file) if config.eval.ifeval_file else BUILTIN_SUITE
    if "custom" in config.eval.suites:
        files["eval.custom_file"] = Path(config.eval.custom_file)
    return files


def target_prompts(path: Path, key: str = "data.decontam.targets") -> Iterable[tuple[str, str]]:
    """(prompt, label) for each row of a benchmark file (`key` names it in errors): JSONL with 'prompt',
    'instruction' or 'messages'."""
    if not path.is_file():
        require_files({key: path})
        raise UserError(f"{path}: not a file ({key}); give a JSONL file of prompts")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not valid JSON ({exc.msg}); decontamination targets are JSONL") from None
            label = f"{path.name} line {number} ({key})"
            if isinstance(row.get("prompt"), str):
                yield row["prompt"], label
            elif isinstance(row.get("instruction"), str):
                yield f"{row['instruction']}\n{row.get('input') or ''}", label
            elif isinstance(row.get("messages"), list):
                turns = [m for m in row["messages"] if isinstance(m, dict) and m.get("role") == "user"]
                yield "\n".join(str(m.get("content", "")) for m in turns), label
            else:
                raise UserError(f"{path}:{number}: expected a 'prompt', 'instruction' or 'messages' field")
