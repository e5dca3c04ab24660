"""Seed tasks and prompts: every row read, kept or dropped with its line and reason.

Rows are JSONL/JSON/CSV/TSV/Parquet as `adhere data` reads them (a malformed line is a dropped row,
not a crash), in one of three shapes, or a .txt file with one prompt per line:

    {"instruction": "Summarize the text.", "input": "...", "output": "..."}   # input, output optional
    {"prompt": "Write a haiku about rain.", "completion": "..."}               # completion optional
    {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}

A row repeating an earlier one (same instruction and input, ignoring case and spacing) is dropped
as a duplicate. With no seed left, the run stops with an error that names the first problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adhere.data.records import Rejection
from adhere.data.sources import RawRow, read_rows
from adhere.errors import UserError


@dataclass(frozen=True)
class Seed:
    """One seed task: where it came from, the instruction, its optional input and reference output."""

    location: str
    instruction: str
    input: str = ""
    output: str = ""

    @property
    def prompt(self) -> str:
        """The user turn: the instruction, then the input after a blank line (as Alpaca rows become)."""
        return f"{self.instruction}\n\n{self.input}" if self.input.strip() else self.instruction

    def provenance(self, path: str) -> dict[str, str]:
        return {"file": path, "location": self.location, "instruction": self.instruction}


def read_seeds(path: str | Path) -> tuple[list[Seed], list[dict[str, Any]]]:
    """(kept seeds, dropped rows as {'location', 'rule', 'reason'}) of a seed file."""
    path = Path(path)
    rows = _text_rows(path) if path.suffix.lower() == ".txt" else read_rows(path)
    seeds: list[Seed] = []
    dropped: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    for raw in rows:
        try:
            seed = _seed(raw)
        except Rejection as rejection:
            dropped.append({"location": raw.location, "rule": rejection.rule, "reason": rejection.reason})
            continue
        key = (_norm(seed.instruction), _norm(seed.input))
        if key in seen:
            dropped.append({"location": raw.location, "rule": "duplicate", "reason": f"repeats the seed at {seen[key]}"})
            continue
        seen[key] = raw.location
        seeds.append(seed)
    if not seeds:
        problems = "; ".join(f"{d['location']}: {d['reason']}" for d in dropped[:3]) or "the file has no rows"
        raise UserError(f"{path}: no usable seed task ({problems}); synth.seed_file needs rows with 'instruction', "
                        "'prompt' or 'messages', or a .txt file with one prompt per line")
    return seeds, dropped


def _text_rows(path: Path) -> list[RawRow]:
    if not path.is_file():
        raise UserError(f"{path}: no such file (synth.seed_file)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 (byte {exc.start}); save it as UTF-8") from None
    return [RawRow(str(path), f"line {n}", {"prompt": line}) for n, line in enumerate(lines, start=1) if line.strip()]


def _seed(raw: RawRow) -> Seed:
    if raw.error is not None:
        raise raw.error
    row = raw.fields or {}
    if "instruction" in row:
        return Seed(raw.location, _text(row, "instruction"), _text(row, "input", ""), _text(row, "output", ""))
    if "prompt" in row:
        return Seed(raw.location, _text(row, "prompt"), "", _text(row, "completion", _text(row, "response", "")))
    if "messages" in row:
        return _from_messages(raw.location, row["messages"])
    fields = ", ".join(sorted(row)) or "none"
    raise Rejection("unknown_format", f"fields ({fields}): expected 'instruction', 'prompt' or 'messages'")


def _from_messages(location: str, messages: Any) -> Seed:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise Rejection("wrong_type", "messages: expected a list of {role, content} mappings")
    users = [m.get("content") for m in messages if m.get("role") == "user"]
    answers = [m.get("content") for m in messages if m.get("role") == "assistant"]
    if not users or not isinstance(users[0], str) or not users[0].strip():
        raise Rejection("empty_prompt", "messages: no user turn with text")
    output = answers[-1] if answers and isinstance(answers[-1], str) else ""
    return Seed(location, users[0].strip(), "", output)


def _text(row: dict[str, Any], key: str, default: str | None = None) -> str:
    value = row.get(key, default)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise Rejection("wrong_type", f"{key}: expected a string, got {type(value).__name__}")
    if default is None and not value.strip():
        raise Rejection("empty_prompt", f"{key} is empty")
    return value.strip()


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())
