"""One suite's block of results.json: each metric per model with a 95% CI, each model against the baseline,
and each against the model before it (tuned vs sft).

Pass/fail metrics are compared with McNemar's exact test on the prompts both
models were scored on and list the prompts that flipped; scores with a paired
bootstrap. Instruction-level rates resample prompts, not instructions, since
the instructions of one prompt share one response.
"""

from __future__ import annotations

import math
from typing import Any

from adhere.eval import stats
from adhere.eval.score import Metric, Scored


def metric_block(metric: Metric, scored: dict[str, dict[str, Scored]], baseline: str, seed: int,
                 resamples: int) -> dict[str, Any] | None:
    """{"label", "kind", "models": {name: {value, ci, n}}, "comparison"?, "comparisons"?}; None if no model has a value."""
    values = {model: _values(metric, by_id) for model, by_id in scored.items()}
    block: dict[str, Any] = {"label": metric.label, "kind": metric.kind, "models": {}}
    for model, by_id in values.items():
        if by_id:
            block["models"][model] = _estimate(list(by_id.values()), seed, resamples)
    if not block["models"]:
        return None
    # Each model against the baseline, then each against the one before it where that is not the baseline
    # (base, sft, tuned: also tuned vs sft, what the DPO stage changed).
    order = list(values)
    pairs = [(baseline, m) for m in order if m != baseline and baseline in values]
    pairs += [(before, m) for before, m in zip(order, order[1:]) if baseline not in (before, m)]
    comparisons = [_compare(values[a], values[b], b, a, seed, resamples) for a, b in pairs]
    comparisons = [c for c in comparisons if c is not None]
    if comparisons:
        block["comparison"] = comparisons[0]
        if len(comparisons) > 1:
            block["comparisons"] = comparisons
    return block


def _values(metric: Metric, by_id: dict[str, Scored]) -> dict[str, Any]:
    out = {}
    for item_id, record in by_id.items():
        value = metric.value(record)
        if value is None or (isinstance(value, list) and not value):
            continue
        out[item_id] = value
    return out


def _estimate(values: list[Any], seed: int, resamples: int) -> dict[str, Any]:
    if isinstance(values[0], list):  # instruction-level: prompts are the resampled unit
        value, lo, hi = stats.cluster_bootstrap_ci(values, seed=seed, resamples=resamples)
        n = sum(len(v) for v in values)
    else:
        value, lo, hi = stats.bootstrap_ci([float(v) for v in values], seed=seed, resamples=resamples)
        n = len(values)
    ci = [lo, hi] if n >= 2 and not math.isnan(lo) else None  # one item: no interval
    return {"value": value, "ci": ci, "n": n}


def _compare(base: dict[str, Any], other: dict[str, Any], model: str, baseline: str, seed: int,
             resamples: int) -> dict[str, Any] | None:
    ids = [i for i in base if i in other]
    if len(ids) < 2:
        return None
    a, b = [base[i] for i in ids], [other[i] for i in ids]
    out: dict[str, Any] = {"model": model, "baseline": baseline, "n": len(ids), "improved": [], "regressed": []}
    if isinstance(a[0], list):
        paired = stats.paired_cluster_bootstrap(a, b, seed=seed, resamples=resamples)
        out.update(delta=paired.delta, ci=[paired.lo, paired.hi], p_value=paired.p_value, test="paired bootstrap over prompts")
    elif isinstance(a[0], bool):
        paired = stats.paired_bootstrap([float(x) for x in a], [float(x) for x in b], seed=seed, resamples=resamples)
        test = stats.mcnemar(a, b)
        improved, regressed = stats.flips(ids, a, b)
        out.update(delta=paired.delta, ci=[paired.lo, paired.hi], p_value=test.p_value, test="McNemar (exact)",
                   improved=improved, regressed=regressed)
    else:
        paired = stats.paired_bootstrap([float(x) for x in a], [float(x) for x in b], seed=seed, resamples=resamples)
        out.update(delta=paired.delta, ci=[paired.lo, paired.hi], p_value=paired.p_value, test="paired bootstrap")
    return out


def breakdown_block(title: str, rows: dict[str, dict[str, list[bool]]]) -> dict[str, Any]:
    """{"title", "rows": {row: {model: {value, n}}}} from pass/fail lists per row and model."""
    out: dict[str, Any] = {"title": title, "rows": {}}
    for row, by_model in rows.items():
        out["rows"][row] = {model: {"value": sum(v) / len(v), "n": len(v)} for model, v in by_model.items() if v}
    return out


def responses_block(generations: dict[str, Any], max_new_tokens: int) -> dict[str, Any]:
    """Empty rate, truncation rate, mean length and the lengths, of the responses that were generated."""
    done = [g for g in generations.values() if g.finish_reason != "error"]
    if not done:
        return {"empty_rate": None, "truncation_rate": None, "mean_tokens": None, "lengths": []}
    lengths = [g.completion_tokens for g in done]
    return {
        "empty_rate": sum(not g.text.strip() for g in done) / len(done),
        "truncation_rate": sum(g.finish_reason == "length" for g in done) / len(done),
        "mean_tokens": sum(lengths) / len(lengths),
        "lengths": lengths,
    }
