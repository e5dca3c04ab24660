"""Verifier-filtered constraint data: prompts with 1-3 verifiable constraints, answers kept only when they pass.

    synth: {mode: constraints, seed_file: prompts.jsonl, target: 500, constraints: {registry: ifeval, samples: 4}}

Each seed prompt gets, `variants` times, between `min_constraints` and `max_constraints`
constraints drawn from the registry (never two that clash; `adhere.synth.catalog`), each with
sampled arguments and said in one of several wordings. The teacher answers up to `samples` times
(sample k seeded with seed + k); the first answer that passes every attached constraint under the
strict checker, and the spec's own checks, is kept. Rejection sampling is what makes a weak teacher
useful: a 135M model that follows "no commas" one time in four still yields a clean example.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from adhere.synth.catalog import Attached, draw
from adhere.synth.context import Attempt, Context, failure, sample_until_pass, spec_failures
from adhere.synth.seeds import Seed


def build_prompt(ctx: Context, seed: Seed, variant: int, index: int) -> tuple[str, list[Attached]]:
    """The seed's prompt followed by its constraints' sentences, drawn from a seed that names this item."""
    cfg = ctx.synth.constraints
    rng = random.Random(f"{ctx.synth.seed}:constraints:{variant}:{index}")
    count = rng.randint(cfg.min_constraints, cfg.max_constraints)
    attached = draw(cfg.registry, rng, seed.prompt, count, cfg.kinds)
    return " ".join([seed.prompt.rstrip()] + [a.phrase for a in attached]), attached


def generate(ctx: Context, log: Callable[[str], None]) -> None:
    """Every seed prompt, `variants` times, until synth.target records are kept or the budget stops."""
    cfg = ctx.synth.constraints
    tally: dict[str, Counter[str]] = {"attached": Counter(), "kept": Counter()}
    ctx.stats.update(samples_per_kept=Counter(), constraints=tally)
    items = [(variant, index, seed) for variant in range(cfg.variants) for index, seed in enumerate(ctx.seeds)]
    done = unsent = 0
    while done < len(items) and not ctx.ledger.full and not ctx.teacher.budget.stopped:
        # Only as many prompts as records still wanted (at least a batch): near the target, no budget is wasted.
        size = max(ctx.synth.batch_size, ctx.ledger.target - len(ctx.ledger.kept))
        chunk = items[done:done + size]
        done += len(chunk)
        ctx.ledger.add(len(chunk))
        attempts = [a for a in (_attempt(ctx, *item) for item in chunk) if a is not None]
        sample_until_pass(ctx, attempts, cfg.samples)
        for attempt in attempts:
            unsent += not _settle(ctx, attempt, tally)
        log(f"{done - unsent} of {len(items)} prompts tried; {len(ctx.ledger.kept)} records kept")
    ctx.stats["prompts_not_tried"] = len(items) - done + unsent  # never reached: the target or the budget came first
    ctx.stats["samples_per_kept"] = dict(sorted(ctx.stats["samples_per_kept"].items()))
    ctx.stats["constraints"] = {kind: {"attached": n, "kept": tally["kept"][kind]} for kind, n in tally["attached"].most_common()}


def _attempt(ctx: Context, variant: int, index: int, seed: Seed) -> Attempt | None:
    """The item to sample for, or None when its prompt is contaminated (dropped before any teacher call)."""
    prompt, attached = build_prompt(ctx, seed, variant, index)
    payload = {"seed": seed, "prompt": prompt, "attached": attached, "variant": variant}
    problem = ctx.contaminated(prompt)
    if problem is not None:
        ctx.ledger.drop(problem.rule, problem.reason, _shown(payload))
        return None

    def check(response: str) -> list[str]:
        failed = [a.id for a in attached if not a.check(response)]
        return failed + spec_failures(ctx.config.spec, response) + (["decontam"] if ctx.contaminated(response) else [])

    return Attempt(ctx.chat(prompt), check, payload)


def _settle(ctx: Context, attempt: Attempt, tally: dict[str, Counter[str]]) -> bool:
    """Keep or drop the attempt; False when it never reached the teacher (the budget ran out first)."""
    payload = attempt.payload
    sent = attempt.tries > 0 or any(rule != "budget_exhausted" for rule in attempt.problems)
    if sent:  # per-constraint counts are over prompts the teacher answered
        tally["attached"].update(a.id for a in payload["attached"])
    if attempt.passed is None:
        problem = failure(attempt, ctx.synth.constraints.samples)
        ctx.ledger.drop(problem.rule, problem.reason, _shown(payload))
        return sent
    text, sample = attempt.passed
    attached: list[Attached] = payload["attached"]
    record = ctx.record(
        "constraints", payload["prompt"], text, payload["seed"], ctx.params(sample),
        registry=ctx.synth.constraints.registry, variant=payload["variant"],
        constraints=[{"id": a.id, "kwargs": a.kwargs, "phrase": a.phrase} for a in attached],
        # IFEval's own fields, so the record can be scored again by `adhere eval`'s checkers.
        instruction_id_list=[a.id for a in attached], kwargs=[a.kwargs for a in attached],
        filters={"constraints": "all passed (strict)", "samples_tried": sample + 1, "spec": "passed",
                 "decontam": "passed"},
    )
    if ctx.ledger.keep(record):
        tally["kept"].update(a.id for a in attached)
        ctx.stats["samples_per_kept"][sample + 1] += 1
    return True


def _shown(payload: dict[str, Any]) -> dict[str, Any]:
    return {"seed": payload["seed"].location, "prompt": payload["prompt"],
            "constraints": [{"id": a.id, **a.kwargs} for a in payload["attached"]]}
