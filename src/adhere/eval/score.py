"""Scoring one response of one suite: the checks it passes and its scores, as a `Scored` record.

Each suite names its headline metrics in `METRICS`: a key, a label, a kind
('rate' of passes, 'score' between 0 and 1, or 'mean' of a plain number) and
how to read the metric's value off a Scored record. `results.py` turns those
values into confidence intervals and paired comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:
    from adhere.config import ProjectConfig
    from adhere.eval.suites import Item

Kind = Literal["rate", "score", "mean"]


@dataclass
class Scored:
    """What one model's response to one prompt earned."""

    checks: dict[str, bool] = field(default_factory=dict)  # pass/fail: constraints, JSON validity, IFEval (strict)
    scores: dict[str, float] = field(default_factory=dict)  # ROUGE-L, field F1, judge score
    loose: dict[str, bool] = field(default_factory=dict)  # IFEval loose verdicts
    instructions: list[str] = field(default_factory=list)  # IFEval instruction ids, in prompt order
    verdict: Any = None  # the IFEval PromptVerdict, for the reference-shaped output files


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    kind: Kind
    value: Callable[[Scored], Any]  # bool | float | list[bool] (per instruction, for instruction-level rates) | None


def score_item(suite: str, item: Item, response: str, config: ProjectConfig) -> Scored:
    """Checks and scores of `response` for `item` of `suite` ('judge' adds its scores later)."""
    if suite == "ifeval":
        return _ifeval(item, response)
    scored = Scored(checks={c.label: c.check(response) for c in item.constraints})
    if item.reference is not None:
        from adhere.eval.metrics import reference_metrics

        values = reference_metrics(response, item.reference, config.spec.output, config.eval.list_key)
        for key, value in values.items():
            if isinstance(value, bool):
                scored.checks[key] = value
            elif key in REFERENCE_SCORES:
                scored.scores[key] = float(value)
        if config.spec.output.format == "json":
            scored.scores.update(_json_fields(response, item.reference, config))
    return scored


REFERENCE_SCORES = {"rouge_l", "field_f1"}  # of reference_metrics' numbers, those shown (the others are its parts)


def _json_fields(response: str, reference: str, config: ProjectConfig) -> dict[str, float]:
    """The configured item F1s and per-field ROUGE-L of a JSON answer."""
    from adhere.eval.metrics import field_rouge_l, item_f1

    out = {f"{name}_f1": item_f1(response, reference, path=spec.list, key=tuple(spec.key))
           for name, spec in config.eval.item_f1.items()}
    out.update({f"rouge_l_{field}": field_rouge_l(response, reference, path=field) for field in config.eval.rouge_fields})
    return out


def _ifeval(item: Item, response: str) -> Scored:
    from adhere.eval.ifeval import score_response

    verdict = score_response(item.ifeval, response)
    ids = list(item.ifeval.instruction_id_list)
    # One instruction id can repeat in a prompt; keys stay unique so each verdict shows in samples.jsonl.
    keys = [iid if ids.count(iid) == 1 else f"{iid}#{ids[:i + 1].count(iid)}" for i, iid in enumerate(ids)]
    return Scored(checks=dict(zip(keys, verdict.strict)), loose=dict(zip(keys, verdict.loose)), instructions=ids,
                  verdict=verdict)


def metrics_for(suite: str, config: ProjectConfig, has_reference: bool) -> list[Metric]:
    """The headline metrics of a suite, in display order."""
    if suite == "ifeval":
        return [
            Metric("prompt_strict", "Prompt-level accuracy (strict)", "rate", lambda s: all(s.checks.values())),
            Metric("instruction_strict", "Instruction-level accuracy (strict)", "rate", lambda s: list(s.checks.values())),
            Metric("prompt_loose", "Prompt-level accuracy (loose)", "rate", lambda s: all(s.loose.values())),
            Metric("instruction_loose", "Instruction-level accuracy (loose)", "rate", lambda s: list(s.loose.values())),
        ]
    if suite == "judge":
        return [Metric("score", "Rubric score (1-5)", "mean", lambda s: s.scores.get("judge"))]
    out = []
    constraint_labels = lambda s: [v for k, v in s.checks.items() if k not in REFERENCE_CHECKS]  # noqa: E731
    if suite == "custom" or config.spec.constraints:
        out.append(Metric("all_constraints", "All constraints met", "rate", lambda s: all(constraint_labels(s))))
        out.append(Metric("constraints", "Constraints met (each)", "rate", constraint_labels))
    if has_reference and config.spec.output.format == "json":
        out.append(Metric("json_parse", "Parses as JSON", "rate", lambda s: s.checks.get("json_parse")))
        if config.spec.output.schema_ is not None:
            out.append(Metric("json_schema_valid", "Valid per the JSON schema", "rate",
                              lambda s: s.checks.get("json_schema_valid")))
        out.append(Metric("field_f1", "JSON field F1 vs reference", "score", lambda s: s.scores.get("field_f1")))
        for name, spec in config.eval.item_f1.items():
            out.append(Metric(f"{name}_f1", f"{name} F1 ({spec.list} items on {', '.join(spec.key)})", "score",
                              lambda s, k=f"{name}_f1": s.scores.get(k)))
        for field_path in config.eval.rouge_fields:
            out.append(Metric(f"rouge_l_{field_path}", f"ROUGE-L F1 of {field_path}", "score",
                              lambda s, k=f"rouge_l_{field_path}": s.scores.get(k)))
    if has_reference:
        out.append(Metric("rouge_l", "ROUGE-L F1 vs reference", "score", lambda s: s.scores.get("rouge_l")))
        out.append(Metric("exact_match", "Exact match", "rate", lambda s: s.checks.get("exact_match")))
    return out


REFERENCE_CHECKS = {"json_parse", "json_schema_valid", "exact_match"}


def breakdown_rows(suite: str, scored: dict[str, Scored]) -> dict[str, list[bool]]:
    """Pass/fail lists per row of the suite's breakdown chart: per instruction type (IFEval) or per constraint."""
    rows: dict[str, list[bool]] = {}
    for record in scored.values():
        if suite == "ifeval":
            for instruction, passed in zip(record.instructions, record.checks.values()):
                rows.setdefault(instruction, []).append(passed)
        else:
            for label, passed in record.checks.items():
                if label not in REFERENCE_CHECKS:
                    rows.setdefault(label, []).append(passed)
    return dict(sorted(rows.items())) if suite == "ifeval" else rows
