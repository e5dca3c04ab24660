"""The prompts each evaluation suite asks, read from files into one shape.

    held_out  workdir/data/eval.jsonl (written by `adhere data`): the last assistant turn is the reference
    ifeval    IFEval-format JSONL (eval.ifeval_file, or the 541 public prompts shipped with adhere)
    custom    eval.custom_file: {"id", "prompt" | "messages", "constraints": [...], "reference"?} per line
    judge     the held-out prompts again, scored by an LLM judge (see `judge.py`)

A line that cannot be used is skipped and reported with its file and line
number (`Suite.problems`), so one bad line never hides the other prompts; a
file with no usable line at all is an error. Ids key every answer and score,
so they are unique within a suite: a repeated custom id or IFEval key is such
a bad line, and a held-out `meta.id` seen before gets a suffix (see `held_out`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adhere.errors import UserError

if TYPE_CHECKING:
    from adhere.config import ProjectConfig
    from adhere.spec.config import Constraint

TITLES = {"held_out": "Held-out instructions", "ifeval": "IFEval", "custom": "Acceptance prompts", "judge": "LLM judge"}


@dataclass
class Item:
    """One prompt of a suite: the chat the model answers and what its answer is checked against."""

    id: str
    messages: list[dict[str, str]]  # {"role", "content"}, ending with a user turn
    reference: str | None = None
    constraints: list[Constraint] = field(default_factory=list)
    ifeval: Any = None  # the IFEval prompt (instruction ids and kwargs) for the ifeval suite

    @property
    def prompt(self) -> str:
        """The last user message, as reports show it."""
        return self.messages[-1]["content"]

    @property
    def system(self) -> str | None:
        return self.messages[0]["content"] if self.messages[0]["role"] == "system" else None


@dataclass
class Suite:
    name: str
    title: str
    items: list[Item]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file:line, why it was skipped)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (file:line, what was changed to use it)


def load(name: str, config: ProjectConfig) -> Suite:
    """The prompts of suite `name`, capped at eval.max_prompts."""
    suite = {"held_out": held_out, "judge": held_out, "ifeval": ifeval, "custom": custom}[name](config)
    suite.name, suite.title = name, TITLES[name]
    if config.eval.max_prompts:
        suite.items = suite.items[: config.eval.max_prompts]
    if len({item.id for item in suite.items}) != len(suite.items):  # answers are keyed by id: one would be lost
        raise AssertionError(f"suite {name}: the loader let a repeated id through")
    return suite


def held_out(config: ProjectConfig) -> Suite:
    """The data stage's eval split: each record's chat up to its last assistant turn, which is the reference.

    An item's id is its record's `meta.id`, else `eval-<line>`. `meta.id` comes from the source rows as
    given, so two sources that each number their rows from 1 repeat ids: a repeat is renamed `<id>#2`
    (`#3`, ...) and noted, not dropped, since every record of the split is a prompt worth scoring.
    """
    from adhere.data.records import read_records

    path = config.stage_dir("data") / "eval.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: not found; run `adhere data {config.name}` first (it writes the eval split)")
    rows, problems = [], []
    for number, record in enumerate(read_records(path), start=1):
        messages = [{"role": m["role"], "content": m["content"]} for m in record.get("messages", [])]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or not any(m["role"] == "user" for m in messages[:last]):
            problems.append((f"{path}:{number}", "no assistant answer after a user turn to compare with"))
            continue
        meta = record.get("meta") or {}
        rows.append((number, str(meta.get("id") or f"eval-{number}"), messages[:last], messages[last]["content"]))
    if not rows:
        raise UserError(f"{path}: no usable eval example; check `adhere data` output or set data.eval_fraction")
    ids, notes = _unique_ids([(number, item_id) for number, item_id, _, _ in rows], path)
    items = [Item(item_id, chat, reference, list(config.spec.constraints))
             for item_id, (_, _, chat, reference) in zip(ids, rows)]
    return Suite("held_out", "", items, problems, notes)


def _unique_ids(rows: list[tuple[int, str]], path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Each (line, id)'s id, a repeat suffixed '#2', '#3'... past every id in the file; a note per rename."""
    taken = {item_id for _, item_id in rows}
    first: dict[str, int] = {}
    ids, notes = [], []
    for number, item_id in rows:
        if item_id not in first:
            first[item_id] = number
            ids.append(item_id)
            continue
        n = 2
        while f"{item_id}#{n}" in taken:
            n += 1
        renamed = f"{item_id}#{n}"
        taken.add(renamed)
        ids.append(renamed)
        notes.append((f"{path}:{number}", f"id {item_id!r} is also on line {first[item_id]}; scored as {renamed!r}"))
    return ids, notes


def ifeval(config: ProjectConfig) -> Suite:
    """IFEval prompts, asked as single user turns with no system prompt (the benchmark's setting)."""
    from adhere.eval.ifeval import load_suite_lenient

    path = Path(config.eval.ifeval_file) if config.eval.ifeval_file else None
    prompts, problems = load_suite_lenient(path)
    where = str(path) if path else "the bundled IFEval prompts"
    if not prompts:
        raise UserError(f"{where}: no usable IFEval prompt ({len(problems)} lines rejected; first: {problems[:1]})")
    items = [Item(str(p.key), [{"role": "user", "content": p.prompt}], None, [], p) for p in prompts]
    return Suite("ifeval", "", items, [(f"{where}:{line}", why) for line, why in problems])


def custom(config: ProjectConfig) -> Suite:
    """A team's own acceptance prompts, each with its constraints (plus the spec's, which every response must meet)."""
    path = Path(config.eval.custom_file)
    if not path.is_file():
        raise UserError(f"eval.custom_file: {path} not found; give a JSONL file of prompts and constraints")
    items, problems, seen = [], [], {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = _custom_item(json.loads(line), number, config)
        except json.JSONDecodeError as exc:
            problems.append((f"{path}:{number}", f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        except ValueError as exc:
            problems.append((f"{path}:{number}", str(exc)))
            continue
        if item.id in seen:
            why = f"id {item.id!r} is already used on line {seen[item.id]}; give each prompt its own id"
            problems.append((f"{path}:{number}", why))
            continue
        seen[item.id] = number
        items.append(item)
    if not items:
        first = f"; first problem: {problems[0][0]}: {problems[0][1]}" if problems else ""
        raise UserError(f"{path}: no usable prompt{first}")
    return Suite("custom", "", items, problems)


def _custom_item(row: Any, number: int, config: ProjectConfig) -> Item:
    """One custom line as an Item; ValueError says what is wrong with it."""
    if not isinstance(row, dict):
        raise ValueError(f"expected an object with prompt (or messages) and constraints, got {type(row).__name__}")
    unknown = set(row) - {"id", "prompt", "messages", "constraints", "reference"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; known: id, prompt, messages, constraints, reference")
    if isinstance(row.get("prompt"), str) and row["prompt"].strip():
        messages = [{"role": "user", "content": row["prompt"]}]
    elif isinstance(row.get("messages"), list) and row["messages"]:
        messages = [_message(m, i) for i, m in enumerate(row["messages"])]
        if messages[-1]["role"] != "user":
            raise ValueError("messages must end with a user turn (the model writes the next one)")
    else:
        raise ValueError("needs a non-empty 'prompt' string or a 'messages' list")
    if config.spec.system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": config.spec.system_prompt})  # as in training and serving
    reference = row.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise ValueError("'reference' must be a string")
    return Item(str(row.get("id") or f"custom-{number}"), messages, reference, _constraints(row, config))


def _message(message: Any, index: int) -> dict[str, str]:
    if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
        raise ValueError(f"messages[{index}]: expected {{'role': system|user|assistant, 'content': ...}}")
    if not isinstance(message.get("content"), str):
        raise ValueError(f"messages[{index}].content: expected a string")
    return {"role": message["role"], "content": message["content"]}


def _constraints(row: dict[str, Any], config: ProjectConfig) -> list[Constraint]:
    """The line's constraints, validated as spec constraints are, then the spec's own."""
    from pydantic import ValidationError

    from adhere.config import describe_error
    from adhere.spec.config import SpecConfig

    given = row.get("constraints", [])
    if not isinstance(given, list):
        raise ValueError("'constraints' must be a list like [{\"id\": \"max_words\", \"n\": 100}]")
    try:
        spec = SpecConfig.model_validate({"output": config.spec.output.model_dump(by_alias=True), "constraints": given})
    except ValidationError as err:
        first = err.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
        raise ValueError(f"{where}: {describe_error(first)}") from None
    own = {c.label for c in spec.constraints}
    return spec.constraints + [c for c in config.spec.constraints if c.label not in own]
