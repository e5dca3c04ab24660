"""Rewrite mode: existing reference responses rewritten by the teacher into the spec's format.

    synth: {mode: rewrite, seed_file: reviews.jsonl, rewrite: {samples: 2}}

Each seed row with a reference output (Alpaca `output`, a `completion`, or the last assistant turn)
is sent with the spec (task, description, output format and schema, each constraint in words) and
the teacher answers with the rewritten response only. The first rewrite that passes the spec's
checks (JSON that parses, the schema, every constraint) is kept, paired with the original prompt;
rows without a reference are dropped as `no_reference`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from adhere.errors import UserError
from adhere.spec.config import SpecConfig
from adhere.spec.constraints import describe
from adhere.synth.context import Attempt, Context, failure, sample_until_pass, spec_failures
from adhere.synth.seeds import Seed


def rewrite_chat(spec: SpecConfig, seed: Seed) -> list[dict[str, str]]:
    """The chat asking the teacher to rewrite one reference response so that it meets the spec."""
    lines = [f"Rewrite an assistant's response so that it meets a specification. Task: {spec.task}."]
    if spec.description:
        lines.append(spec.description)
    if spec.output.format == "json":
        lines.append("The response must be JSON only, with no text around it.")
        if spec.output.schema_ is not None:
            lines.append(f"It must validate against this JSON Schema:\n{json.dumps(spec.output.schema_, indent=1)}")
    for constraint in spec.constraints:
        if constraint.id != "json_schema":
            lines.append(f"- {describe(constraint.id)} ({constraint.label})")
    lines += ["", f"[Request]\n{seed.prompt}", "", f"[Original response]\n{seed.output}", "",
              "Keep the original's content and meaning. Reply with the rewritten response only."]
    return [{"role": "user", "content": "\n".join(lines)}]


def generate(ctx: Context, log: Callable[[str], None]) -> None:
    """Rewrite every seed's reference response, `target` records at most."""
    spec = ctx.config.spec
    if spec.output.format != "json" and not spec.constraints:
        raise UserError("synth.mode 'rewrite' keeps only rewrites that pass the spec, but the spec checks nothing; "
                        "set spec.output.format: json (with a schema) or list spec.constraints")
    samples = ctx.synth.rewrite.samples
    pending = list(ctx.seeds)
    while pending and not ctx.ledger.full and not ctx.teacher.budget.stopped:
        size = max(ctx.synth.batch_size, ctx.ledger.target - len(ctx.ledger.kept))
        chunk, pending = pending[:size], pending[size:]
        ctx.ledger.add(len(chunk))
        attempts = []
        for seed in chunk:
            problem = ctx.contaminated(seed.prompt)
            if not seed.output.strip():
                ctx.ledger.drop("no_reference", "the row has no reference response to rewrite", _shown(seed))
            elif problem is not None:
                ctx.ledger.drop(problem.rule, problem.reason, _shown(seed))
            else:
                attempts.append(Attempt(rewrite_chat(spec, seed), lambda text: spec_failures(spec, text), seed))
        sample_until_pass(ctx, attempts, samples)
        for attempt in attempts:
            seed = attempt.payload
            if attempt.passed is None:
                problem = failure(attempt, samples)
                ctx.ledger.drop(problem.rule, problem.reason, _shown(seed))
                continue
            text, sample = attempt.passed
            ctx.ledger.keep(ctx.record("rewrite", seed.prompt, text, seed, ctx.params(sample), rewritten_from=seed.output,
                                       filters={"spec": "passed", "samples_tried": sample + 1}))
        log(f"{len(ctx.seeds) - len(pending)} of {len(ctx.seeds)} records tried; {len(ctx.ledger.kept)} rewrites kept")
    ctx.stats["records_not_tried"] = len(pending)


def _shown(seed: Seed) -> dict[str, str]:
    return {"seed": seed.location, "prompt": seed.prompt, "original": seed.output}
