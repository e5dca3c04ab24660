"""Synthetic data from a teacher model: every candidate kept or dropped with a rule, counts that reconcile.

    adhere synth adhere.yaml

Reads `synth.seed_file`, runs the generator of `synth.mode` (self_instruct, constraints or rewrite)
against the teacher, and writes `workdir/synth/`: synth.jsonl (canonical records with their
provenance in `meta`, ready for data.sources), rejected.jsonl (every dropped seed row and candidate
with its rule and reason), stats.json (counts that reconcile: candidates = kept + rejected, seed
rows = seeds + dropped rows; teacher calls, tokens and cache hits) and the run's config, env and
lineage. A budget stop or teacher errors keep what was made; rerunning resumes from the cache.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adhere import runs
from adhere.errors import UserError, require_files
from adhere.synth import constrained, rewrite, self_instruct
from adhere.synth.context import Context, Ledger
from adhere.synth.filters import eval_index
from adhere.synth.seeds import read_seeds
from adhere.synth.teacher import opened_teacher

if TYPE_CHECKING:
    from adhere.config import ProjectConfig


GENERATORS: dict[str, Callable[[Context, Callable[[str], None]], None]] = {
    "self_instruct": self_instruct.generate,
    "constraints": constrained.generate,
    "rewrite": rewrite.generate,
}


def run(config: ProjectConfig, log: Callable[[str], None] = lambda message: None) -> Path:
    """Generate into `workdir/synth/`; return that folder."""
    synth = config.synth
    if synth is None:
        raise UserError("adhere.yaml has no synth section; add one (see `adhere init`'s template) to generate data")
    inputs = input_files(config)
    require_files(inputs)
    started = time.perf_counter()
    seeds, seed_drops = read_seeds(synth.seed_file)
    log(f"{len(seeds)} seeds from {synth.seed_file}" + (f" ({len(seed_drops)} rows dropped)" if seed_drops else ""))
    run_dir = runs.start_stage(config, "synth")
    ledger = Ledger(synth.target)
    with opened_teacher(config, log) as teacher:
        ctx = Context(config, teacher, seeds, eval_index(synth.decontam), ledger)
        GENERATORS[synth.mode](ctx, log)
    if teacher.budget.stopped:
        log(f"stopped early: {teacher.budget.stopped}; rerun with a larger budget to resume from the cache")
    stats = reconcile(ctx, seed_drops, time.perf_counter() - started)
    rejected = [{"stage": "seed_file", "rule": d["rule"], "reason": d["reason"], "location": d["location"]}
                for d in seed_drops] + [{"stage": synth.mode, **r} for r in ledger.rejected]
    outputs = {
        "synth": runs.write_text_atomic(run_dir / "synth.jsonl", _jsonl(ledger.kept)),
        "rejected": runs.write_text_atomic(run_dir / "rejected.jsonl", _jsonl(rejected)),
    }
    outputs["stats"] = runs.write_json_atomic(run_dir / "stats.json", stats)
    runs.write_lineage(run_dir, config, inputs, outputs)
    return run_dir


def input_files(config: ProjectConfig) -> dict[str, Path]:
    """The files the synth stage reads, by config key: the seed file and the decontamination targets."""
    assert config.synth is not None
    targets = config.synth.decontam.targets
    return {"synth.seed_file": Path(config.synth.seed_file)} | {
        f"synth.decontam.targets[{i}]": Path(t) for i, t in enumerate(targets)}


def reconcile(ctx: Context, seed_drops: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """stats.json; raises if a candidate is unaccounted for (a bug, not bad input)."""
    ledger = ctx.ledger
    if ledger.considered != len(ledger.kept) + len(ledger.rejected):
        raise AssertionError(f"{ledger.considered} candidates but {len(ledger.kept)} kept + {len(ledger.rejected)} rejected")
    budget = ctx.teacher.budget
    return {
        "mode": ctx.synth.mode,
        "teacher": ctx.teacher.name,
        "seeds": {"rows": len(ctx.seeds) + len(seed_drops), "kept": len(ctx.seeds), "dropped": len(seed_drops),
                  "dropped_by_rule": dict(Counter(d["rule"] for d in seed_drops).most_common())},
        "candidates": ledger.considered,
        "kept": len(ledger.kept),
        "rejected": len(ledger.rejected),
        "rejected_by_rule": dict(Counter(r["rule"] for r in ledger.rejected).most_common()),
        "target": ctx.synth.target,
        "complete": budget.stopped is None and not budget.errors,
        "teacher_usage": budget.summary(),
        "generator": ctx.stats,
        "seconds": round(seconds, 2),
    }


def _jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
