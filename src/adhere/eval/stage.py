"""Step 5, evaluate instruction following: base vs tuned on prompts they were not trained on.

    adhere eval adhere.yaml
    adhere eval adhere.yaml --set eval.suites='[ifeval]' --set eval.models='[base]'

Generates every model's responses to every suite's prompts (cached by model,
prompt and decoding settings, so a re-run only re-scores), scores them, and
writes `workdir/eval/`: `results.json` (each metric per model with a 95%
bootstrap CI, and each model against the first with a paired test and the
prompts that flipped), `samples.jsonl` (one line per suite, prompt and model),
`report.html`, `ifeval/<model>.{strict,loose}.jsonl` in the reference IFEval
output shape, and the usual config.yaml, env.json and lineage.json. Nothing
is dropped silently: `counts` in each suite says how many prompts were scored
and, for the rest, why not.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from adhere import runs
from adhere.eval import results, score, stats
from adhere.eval.suites import Suite, load
from adhere.generation import refs
from adhere.generation.weights import find_tuned_weights

if TYPE_CHECKING:
    from adhere.config import ProjectConfig

Log = Callable[[str], None]
Progress = Callable[[str, int, int], None]


def cache_dir(config: ProjectConfig) -> Path:
    """Where generations are cached, shared by every evaluation of the project (baseline and eval)."""
    return Path(config.workdir) / "cache"


def run(config: ProjectConfig, log: Log = lambda message: None, *, stage: str = "eval", models: list[Any] | None = None,
        progress: Progress | None = None) -> Path:
    """Evaluate `models` (default eval.models) on eval.suites; write and return `workdir/<stage>/`.

    `adhere run` calls it twice: as stage 'baseline' with the base model only, before training, and as
    'eval' after; the shared generation cache in workdir/cache/ means the base model answers only once.
    `progress(label, done, total)` is called as answers arrive.
    """
    from adhere.generation import GenerationParams

    ec = config.eval
    if models is not None:
        config = config.model_copy(update={"eval": ec.model_copy(update={"models": models})})
        ec = config.eval
    loaded = {name: load(name, config) for name in ec.suites}  # input errors surface before any model loads
    for suite in loaded.values():
        for where, why in suite.problems:
            log(f"skipped {where}: {why}")
        for where, what in suite.notes:
            log(f"note {where}: {what}")
    run_dir = runs.start_stage(config, stage)
    params = GenerationParams(max_new_tokens=ec.max_new_tokens, temperature=ec.temperature, top_p=ec.top_p, seed=ec.seed)
    asked = {("held_out" if name == "judge" else name): suite for name, suite in loaded.items()}  # judge grades held_out
    generations: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in asked}
    for ref in ec.models:
        with refs.opened(ref, config, cache_dir(config), batch_size=ec.batch_size) as backend:
            for name, suite in asked.items():
                log(f"{ref.name}: answering {len(suite.items)} prompts of {suite.title} ({backend.name})")
                tick = _counter(progress, f"{ref.name}: {suite.title}", len(suite.items)) if progress else None
                outputs = backend.generate([item.messages for item in suite.items], params, tick)
                generations[name][ref.name] = {item.id: g for item, g in zip(suite.items, outputs)}
    document = _header(config)
    samples: list[dict[str, Any]] = []
    for name, suite in loaded.items():
        gens = generations["held_out" if name == "judge" else name]
        block, lines = evaluate_suite(suite, gens, config, run_dir, log)
        document["suites"][name] = block
        samples += lines
    runs.write_text_atomic(run_dir / "samples.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    runs.write_json_atomic(run_dir / "results.json", finite(document))
    outputs = {"results": run_dir / "results.json", "samples": run_dir / "samples.jsonl"}
    outputs["report"] = _report(document, samples, run_dir / "report.html")
    runs.write_lineage(run_dir, config, _inputs(config, loaded), outputs)
    return run_dir


def _counter(progress: Progress, label: str, total: int) -> Callable[[int, Any], None]:
    """A backend progress callback (chat index, answer) that reports answers done so far, in any order."""
    done = [0]

    def tick(index: int, generation: Any) -> None:
        done[0] += 1
        progress(label, done[0], total)

    return tick


def _header(config: ProjectConfig) -> dict[str, Any]:
    ec = config.eval
    return {
        "project": config.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "models": {ref.name: refs.describe(ref, config) for ref in ec.models},
        "baseline": ec.models[0].name,
        "decoding": {"max_new_tokens": ec.max_new_tokens, "temperature": ec.temperature, "top_p": ec.top_p,
                     "seed": ec.seed, "batch_size": ec.batch_size},
        "suites": {},
    }


def evaluate_suite(suite: Suite, gens: dict[str, dict[str, Any]], config: ProjectConfig, run_dir: Path,
                   log: Log) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score every generated response of one suite; its results block and its samples lines."""
    ec, baseline = config.eval, config.eval.models[0].name
    skipped: Counter[str] = Counter(f"input line rejected: {why}" for _, why in suite.problems)
    scored: dict[str, dict[str, score.Scored]] = {}
    for model, by_id in gens.items():
        scored[model] = {}
        for item in suite.items:
            generation = by_id[item.id]
            if generation.finish_reason == "error":
                skipped[f"{model}: {_short(generation.error)}"] += 1
                log(f"{model}: prompt {item.id} of {suite.title} not scored: {generation.error}")
                continue
            scored[model][item.id] = score.score_item(suite.name, item, generation.text, config)
    block: dict[str, Any] = {"title": suite.title, "metrics": {}}
    extra: dict[str, Any] = {}
    if suite.name == "judge":
        extra = _judge(suite, gens, scored, config, block, log)
    has_reference = any(item.reference is not None for item in suite.items)
    for metric in score.metrics_for(suite.name, config, has_reference):
        entry = results.metric_block(metric, scored, baseline, ec.seed, ec.bootstrap_resamples)
        if entry is not None:
            block["metrics"][metric.key] = entry
    block.update(extra)
    everyone = set.intersection(*(set(by_id) for by_id in scored.values())) if scored else set()
    block["counts"] = {"prompts": len(suite.items) + len(suite.problems), "scored": len(everyone),
                       "skipped": dict(skipped)}
    if suite.name != "judge":
        rows: dict[str, dict[str, list[bool]]] = {}
        for model, by_id in scored.items():
            for row, passes in score.breakdown_rows(suite.name, by_id).items():
                rows.setdefault(row, {})[model] = passes
        if rows:
            title = "Pass rate per instruction type (strict)" if suite.name == "ifeval" else "Pass rate per constraint"
            block["breakdown"] = results.breakdown_block(title, rows)
    block["responses"] = {model: results.responses_block(by_id, ec.max_new_tokens) for model, by_id in gens.items()}
    if suite.name == "ifeval":
        _write_ifeval_lines(suite, scored, run_dir / "ifeval")
    return block, _sample_lines(suite, gens, scored, extra)


def _judge(suite: Suite, gens: dict[str, dict[str, Any]], scored: dict[str, dict[str, score.Scored]],
           config: ProjectConfig, block: dict[str, Any], log: Log) -> dict[str, Any]:
    """Rubric scores into `scored`, the win-rate metrics into `block`; returns the pairwise counts and texts."""
    from adhere.eval import judge
    from adhere.generation import GenerationParams

    ec = config.eval
    baseline = ec.models[0].name
    params = GenerationParams(max_new_tokens=ec.judge.max_new_tokens, temperature=0.0, top_p=1.0, seed=ec.seed)
    answers = {model: {i: s_gen.text for i, s_gen in by_id.items() if i in scored[model]} for model, by_id in gens.items()}
    texts: dict[str, dict[str, Any]] = {}
    pairs = []
    with refs.opened(ec.judge.model, config, cache_dir(config), batch_size=ec.batch_size) as backend:
        for model, by_id in answers.items():
            log(f"judge ({backend.name}): grading {len(by_id)} responses of {model}")
            graded = judge.judge_scores(backend, params, config.spec, suite.items, by_id)
            for item_id, verdict in graded.items():
                texts.setdefault(model, {})[item_id] = verdict
                if verdict["score"] is not None:
                    scored[model][item_id].scores["judge"] = verdict["score"]
        for model in answers:
            if model != baseline:
                log(f"judge ({backend.name}): comparing {model} with {baseline}, both orders")
                pairs.append(judge.judge_pairs(backend, params, suite.items, answers[model], answers[baseline],
                                               (model, baseline)))
    unparseable = {m: sum(v["score"] is None for v in t.values()) for m, t in texts.items()}
    for pair in pairs:
        outcomes = {i: o for i, o in pair.outcomes.items() if o is not None}
        if len(outcomes) >= 1:
            value, lo, hi = stats.bootstrap_ci(list(outcomes.values()), seed=ec.seed,
                                                       resamples=ec.bootstrap_resamples)
            block["metrics"][f"win_rate_{pair.model}"] = {
                "label": f"Win rate of {pair.model} vs {pair.baseline} (ties count half)", "kind": "rate",
                "models": {pair.model: {"value": value, "ci": [lo, hi] if len(outcomes) >= 2 else None,
                                        "n": len(outcomes)}}}
    return {"pairwise": pairs[0].counts() if pairs else None, "all_pairwise": [p.counts() for p in pairs],
            "unparseable_scores": unparseable, "_texts": texts, "_pairs": pairs}


def _sample_lines(suite: Suite, gens: dict[str, dict[str, Any]], scored: dict[str, dict[str, score.Scored]],
                  extra: dict[str, Any]) -> list[dict[str, Any]]:
    texts, pairs = extra.pop("_texts", {}), {p.model: p for p in extra.pop("_pairs", [])}
    lines = []
    for item in suite.items:
        for model, by_id in gens.items():
            generation, record = by_id[item.id], scored[model].get(item.id)
            line = {"suite": suite.name, "id": item.id, "model": model, "prompt": item.prompt, "system": item.system,
                    "response": generation.text, "reference": item.reference, "finish_reason": generation.finish_reason,
                    "error": generation.error, "tokens": generation.completion_tokens,
                    "checks": record.checks if record else {}, "scores": record.scores if record else {}}
            if suite.name == "ifeval" and record:
                line.update(instruction_id_list=record.instructions, follow_all_instructions=all(record.checks.values()),
                            follow_instruction_list=list(record.checks.values()), loose=record.loose)
            if model in texts and item.id in texts[model]:
                line["judge_reason"] = texts[model][item.id]["text"]
            if model in pairs and item.id in pairs[model].outcomes:
                line["pairwise"] = {"outcome": pairs[model].outcomes[item.id], "verdicts": pairs[model].raw[item.id]}
            lines.append(line)
    return lines


def _write_ifeval_lines(suite: Suite, scored: dict[str, dict[str, score.Scored]], folder: Path) -> None:
    """Each model's verdicts in the reference implementation's output shape, to diff against other IFEval scorers."""
    from adhere.eval.ifeval import write_reference_jsonl

    for model, by_id in scored.items():
        verdicts = [by_id[item.id].verdict for item in suite.items if item.id in by_id]
        for mode in ("strict", "loose"):
            write_reference_jsonl(verdicts, folder / f"{model}.{mode}.jsonl", mode)


def finite(value: Any) -> Any:
    """`value` with NaN and infinities as None: results.json stays strict JSON that browsers and jq parse."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _short(error: str | None) -> str:
    """An error message short enough to count occurrences of (the full text is in samples.jsonl)."""
    text = " ".join((error or "generation failed").split())
    return text if len(text) <= 120 else text[:117] + "..."


def _report(document: dict[str, Any], samples: list[dict[str, Any]], out: Path) -> Path:
    from adhere.eval.report import write_report

    return write_report(document, samples, out)


def _inputs(config: ProjectConfig, loaded: dict[str, Suite]) -> dict[str, Path]:
    inputs = {}
    if "held_out" in loaded or "judge" in loaded:
        inputs["eval_split"] = config.stage_dir("data") / "eval.jsonl"
    if "ifeval" in loaded:
        inputs["ifeval"] = Path(config.eval.ifeval_file) if config.eval.ifeval_file else _bundled_ifeval()
    if "custom" in loaded:
        inputs["custom"] = Path(config.eval.custom_file)
    for kind, stage in (("tuned", None), ("sft", "train")):
        weights = find_tuned_weights(config, stage)
        if any(ref.kind == kind for ref in config.eval.models) and weights is not None:
            inputs[f"{kind}_weights"] = next(iter(sorted(weights.glob("*.safetensors"))), weights)
    return inputs


def _bundled_ifeval() -> Path:
    return Path(__file__).parent / "ifeval" / "input_data.jsonl"
