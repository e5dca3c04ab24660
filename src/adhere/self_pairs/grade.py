"""The score that ranks a model's answers against a prompt's reference answer, in [0, 1].

    score = grader(config)                  # dpo.self_pairs.grader (and checks_weight)
    score(answer, reference)                # 1.0 for the reference itself, with 'item_f1', 'rouge_l', 'exact_match'

The graders are the evaluation's own (adhere.eval.metrics) and the spec's checks as synth applies
them (adhere.synth.context.spec_failures), so "better" here means what `adhere eval` reports as better.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from adhere.eval import metrics
from adhere.synth.context import spec_failures

if TYPE_CHECKING:
    from adhere.config import ProjectConfig
    from adhere.spec.config import SpecConfig

Score = Callable[[str, str], float]  # (answer, reference) -> [0, 1]


def check_share(spec: SpecConfig, answer: str) -> float:
    """The share of the spec's checks `answer` passes: its output format (JSON, schema) and each constraint; 1.0 if none."""
    total = int(spec.output.format == "json" or spec.output.schema_ is not None) + len(spec.constraints)
    return 1.0 - len(spec_failures(spec, answer)) / total if total else 1.0


def item_entry(config: ProjectConfig) -> tuple[str, tuple[str, ...]]:
    """(list path, key fields) of the eval.item_f1 entry dpo.self_pairs.item names, or its first (checked at load)."""
    assert config.dpo is not None and config.dpo.self_pairs is not None
    entries = config.eval.item_f1
    entry = entries[config.dpo.self_pairs.item or next(iter(entries))]
    return entry.list, tuple(entry.key)


def grader(config: ProjectConfig) -> Score:
    """The configured score: dpo.self_pairs.grader, blended with the check share by checks_weight."""
    assert config.dpo is not None and config.dpo.self_pairs is not None
    settings, spec = config.dpo.self_pairs, config.spec
    if settings.grader == "item_f1":
        path, key = item_entry(config)
        main: Score = lambda answer, reference: metrics.item_f1(answer, reference, path=path, key=key)  # noqa: E731
    elif settings.grader == "rouge_l":
        main = metrics.rouge_l
    elif settings.grader == "exact_match":
        main = lambda answer, reference: float(metrics.exact_match(answer, reference))  # noqa: E731
    else:
        main = lambda answer, reference: check_share(spec, answer)  # noqa: E731
    weight = settings.checks_weight
    if not weight or settings.grader == "checks":
        return main
    return lambda answer, reference: (1 - weight) * main(answer, reference) + weight * check_share(spec, answer)
