"""Load an IFEval suite, score responses strictly and loosely, and aggregate the four accuracies.

    >>> prompts = load_suite()                      # the 541 public prompts shipped with adhere
    >>> verdicts = score(prompts, responses)        # one response per prompt, same order
    >>> summarize(verdicts)["prompt_strict"]        # doctest: +SKIP
    0.7685

A suite is JSONL, one `{"key", "prompt", "instruction_id_list", "kwargs"}` object per line, the
format IFEval publishes. `load_suite` refuses a file with any bad line; `load_suite_lenient` keeps
the good prompts and lists the bad lines, so the eval stage can report them and go on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adhere.errors import UserError
from adhere.eval.ifeval.instructions import check, validate_kwargs

BUILTIN_SUITE = Path(__file__).with_name("input_data.jsonl")
Mode = Literal["strict", "loose"]
# How many bad lines one UserError lists before "and N more": enough to see a pattern, short enough to read.
MAX_LISTED = 10


@dataclass(frozen=True)
class IfevalPrompt:
    """One suite line: the prompt and its instructions, kwargs validated and null values dropped."""

    key: int
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class PromptVerdict:
    """A prompt's response and, per instruction, whether it was followed strictly and loosely."""

    key: int
    prompt: str
    response: str
    instruction_id_list: tuple[str, ...]
    strict: tuple[bool, ...]
    loose: tuple[bool, ...]

    def followed(self, mode: Mode) -> tuple[bool, ...]:
        """The per-instruction verdicts of one mode."""
        return self.strict if mode == "strict" else self.loose


class BadLine(ValueError):
    """What is wrong with one suite line; `load_suite_lenient` pairs it with the line number."""


def _parse_line(line: str) -> IfevalPrompt:
    """One suite line as a prompt; raises BadLine saying what is wrong with it."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadLine(f"not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise BadLine("expected a JSON object")
    missing = [f for f in ("key", "prompt", "instruction_id_list", "kwargs") if f not in obj]
    if missing:
        raise BadLine(f"missing field {', '.join(map(repr, missing))}")
    key, prompt, ids, kwargs = obj["key"], obj["prompt"], obj["instruction_id_list"], obj["kwargs"]
    if not isinstance(key, int) or isinstance(key, bool):
        raise BadLine(f"'key' must be an integer, got {key!r}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadLine("'prompt' must be a non-empty string")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise BadLine("'instruction_id_list' must be a non-empty list of instruction ids")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise BadLine(f"'kwargs' must be a list of {len(ids)} objects, one per instruction id")
    try:
        cleaned = tuple(validate_kwargs(i, k) for i, k in zip(ids, kwargs))
    except ValueError as e:
        raise BadLine(str(e)) from None
    return IfevalPrompt(key=key, prompt=prompt, instruction_id_list=tuple(ids), kwargs=cleaned)


def load_suite_lenient(path: Path | None = None) -> tuple[list[IfevalPrompt], list[tuple[int, str]]]:
    """The good prompts of a suite file and the bad lines as (line number, reason); blank lines are skipped."""
    path = Path(path) if path is not None else BUILTIN_SUITE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the IFEval suite ({e}); give a UTF-8 JSONL file") from None
    prompts: list[IfevalPrompt] = []
    problems: list[tuple[int, str]] = []
    seen: dict[int, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            prompt = _parse_line(line)
        except BadLine as e:
            problems.append((number, str(e)))
            continue
        if prompt.key in seen:
            problems.append((number, f"key {prompt.key} is already used on line {seen[prompt.key]}"))
            continue
        seen[prompt.key] = number
        prompts.append(prompt)
    return prompts, problems


def load_suite(path: Path | None = None) -> list[IfevalPrompt]:
    """Every prompt of a suite file (adhere's copy of the 541 IFEval prompts by default); any bad line is a UserError."""
    prompts, problems = load_suite_lenient(path)
    where = Path(path) if path is not None else BUILTIN_SUITE
    if problems:
        listed = "\n".join(f"  {where}:{n}: {reason}" for n, reason in problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise UserError(
            f"{where}: {len(problems)} bad IFEval line(s):\n{listed}{more}\n"
            'Each line must be {"key": int, "prompt": str, "instruction_id_list": [ids], "kwargs": [objects]}; '
            "fix or delete these lines."
        )
    if not prompts:
        raise UserError(f"{where}: no IFEval prompts in the file; give one JSON object per line")
    return prompts


def loose_variants(response: str) -> list[str]:
    """The 8 texts loose scoring tries: the response without its first line, last line or both, each also without `*`."""
    lines = response.split("\n")
    # Why: models often open with "Sure, here is..." or close with "Hope this helps", and markdown `*`
    # can hide a keyword ("**Title**") or a first word; loose mode forgives exactly these.
    cut = ["\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [response, response.replace("*", ""), *cut, *(c.replace("*", "") for c in cut)]


def _followed(instruction_id: str, kwargs: dict[str, Any], candidates: Sequence[str]) -> bool:
    # A blank candidate never follows anything, not even "no commas" (reference: `r.strip() and ...`).
    return any(c.strip() and check(instruction_id, c, **kwargs) for c in candidates)


def score_response(prompt: IfevalPrompt, response: str) -> PromptVerdict:
    """Strict and loose verdicts for each instruction of one prompt."""
    variants = loose_variants(response)
    pairs = list(zip(prompt.instruction_id_list, prompt.kwargs))
    return PromptVerdict(
        key=prompt.key,
        prompt=prompt.prompt,
        response=response,
        instruction_id_list=prompt.instruction_id_list,
        strict=tuple(_followed(i, k, [response]) for i, k in pairs),
        loose=tuple(_followed(i, k, variants) for i, k in pairs),
    )


def score(prompts: Sequence[IfevalPrompt], responses: Sequence[str]) -> list[PromptVerdict]:
    """Verdicts for each prompt with its response (the two sequences in the same order)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; give one response per prompt")
    return [score_response(p, r) for p, r in zip(prompts, responses)]


def prompt_level(verdicts: Sequence[PromptVerdict], mode: Mode) -> list[bool]:
    """Per prompt, whether all its instructions were followed: the samples to bootstrap over."""
    return [all(v.followed(mode)) for v in verdicts]


def _rate(passed: int, total: int) -> float:
    return passed / total if total else 0.0


def summarize(verdicts: Sequence[PromptVerdict]) -> dict[str, Any]:
    """The four IFEval accuracies, their counts, and pass rates per instruction type."""
    summary: dict[str, Any] = {"prompts": len(verdicts), "instructions": sum(len(v.strict) for v in verdicts)}
    for mode in ("strict", "loose"):
        prompts_followed = sum(prompt_level(verdicts, mode))
        instructions_followed = sum(sum(v.followed(mode)) for v in verdicts)
        summary[f"prompt_{mode}"] = _rate(prompts_followed, summary["prompts"])
        summary[f"instruction_{mode}"] = _rate(instructions_followed, summary["instructions"])
        summary[f"prompts_followed_{mode}"] = prompts_followed
        summary[f"instructions_followed_{mode}"] = instructions_followed
    per_type: dict[str, dict[str, float | int]] = {}
    for instruction_id in sorted({i for v in verdicts for i in v.instruction_id_list}):
        results = [(s, lo) for v in verdicts for i, s, lo in zip(v.instruction_id_list, v.strict, v.loose) if i == instruction_id]
        per_type[instruction_id] = {
            "count": len(results),
            "strict": _rate(sum(s for s, _ in results), len(results)),
            "loose": _rate(sum(lo for _, lo in results), len(results)),
        }
    summary["per_instruction"] = per_type
    return summary


def reference_lines(verdicts: Sequence[PromptVerdict], mode: Mode) -> list[dict[str, Any]]:
    """Each verdict in the reference scorer's output shape, to diff against other IFEval implementations."""
    return [
        {
            "prompt": v.prompt,
            "response": v.response,
            "instruction_id_list": list(v.instruction_id_list),
            "follow_all_instructions": all(v.followed(mode)),
            "follow_instruction_list": list(v.followed(mode)),
        }
        for v in verdicts
    ]


def write_reference_jsonl(verdicts: Sequence[PromptVerdict], path: Path, mode: Mode) -> Path:
    """Write `reference_lines` as JSONL (`eval_results_strict.jsonl` / `_loose` in the reference's naming)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for line in reference_lines(verdicts, mode):
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path

