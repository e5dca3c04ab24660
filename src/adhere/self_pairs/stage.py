"""Step 4b's own data: preference pairs from the model's own answers, graded against the references.

    adhere self-pairs adhere.yaml     # after `adhere train`, with a dpo.self_pairs section; `adhere run` runs it before dpo

For each training prompt of workdir/data/train.jsonl (its reference is the last assistant turn), samples
`dpo.self_pairs.samples` answers from the model (the SFT weights by default; sample k with seed + k),
grades each and the reference (`grade.grader`: item F1, ROUGE-L, exact match or the spec's checks), and
makes one candidate pair per prompt: the reference (or the best sample) chosen, the lowest-scoring sample
rejected (ties: the first). It is kept only when the two differ after whitespace normalisation and the
score gap is at least `margin`, so a pair says which findings were wrong, not which words. Every prompt
ends kept or dropped with a rule, as in `adhere synth`.

Writes `workdir/self_pairs/`: pairs.jsonl and pairs_valid.jsonl (a seeded share of the prompts, held out
for DPO's reward accuracy), canonical pair records with their lineage in `meta` (prompt id, sample seeds,
every score); rejected.jsonl (each dropped prompt with its rule and reason); stats.json (counts by rule that
reconcile with the prompts, mean scores of samples and references, histograms, sampling usage); and the
run's config, env and lineage. Sampling goes through the generation cache in cache/ behind synth's budget,
so a rerun reads every answer back and a budget stop resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adhere import runs
from adhere.data.pair_formats import check_pair
from adhere.data.pairs import carve_pairs
from adhere.data.records import Rejection
from adhere.errors import UserError
from adhere.generation import Generation, GenerationParams
from adhere.generation.refs import opened, ref_weights
from adhere.self_pairs.grade import Score, grader
from adhere.synth.context import Ledger
from adhere.synth.teacher import Budget, Teacher, not_sent

if TYPE_CHECKING:
    from adhere.config import ProjectConfig
    from adhere.self_pairs.config import SelfPairsConfig

STAGE = "self_pairs"
BINS = 10  # score histogram: [0, 0.1), ..., [0.9, 1.0]
EPSILON = 1e-9  # 0.8 - 0.5 is 0.30000000000000004; a gap equal to the margin counts as met


@dataclass(frozen=True)
class Prompt:
    """A training prompt: its id, its turns up to the last user turn, and the reference answer after them."""

    id: str
    messages: list[dict[str, str]]
    reference: str
    location: str


@dataclass(frozen=True)
class Sample:
    """One graded answer: which sample (its seed is dpo.self_pairs.seed + index), its text and score."""

    index: int
    text: str
    score: float
    finish_reason: str


def run(config: ProjectConfig, log: Callable[[str], None] = lambda message: None) -> Path:
    """Sample, grade and pair into `workdir/self_pairs/`; return that folder."""
    settings = settings_of(config)
    inputs = input_files(config)
    started = time.perf_counter()
    prompts = read_prompts(inputs["train"], settings.max_prompts)
    score = grader(config)  # a misconfigured grader fails before any sampling
    run_dir = runs.start_stage(config, STAGE)
    log(f"{len(prompts)} prompts x {settings.samples} samples from {settings.model.name}")
    with opened(settings.model, config, run_dir / "cache", batch_size=settings.batch_size) as backend:
        sampler = Teacher(backend, Budget.of(settings.budget), settings.batch_size,
                          lambda message: log(message.replace("teacher", "sampling")))
        answers = sample(sampler, prompts, settings)
    if sampler.budget.stopped:
        log(f"stopped early: {sampler.budget.stopped}; rerun with a larger budget to resume from the cache")
    ledger = Ledger(len(prompts))
    graded = []
    for prompt, generations in zip(prompts, answers):
        candidate = pair_for(prompt, generations, score, settings, sampler.name)
        graded.append(candidate)
        if isinstance(candidate.result, Rejection):
            ledger.drop(candidate.result.rule, candidate.result.reason, {"id": prompt.id, "location": prompt.location})
        else:
            ledger.keep(candidate.result)
        ledger.add()
    train, valid = carve_pairs(ledger.kept, settings.validation_fraction, settings.seed)
    stats = reconcile(ledger, graded, sampler, settings, len(train), len(valid), time.perf_counter() - started)
    outputs = {"pairs": runs.write_text_atomic(run_dir / "pairs.jsonl", _jsonl(train))}
    if valid:
        outputs["pairs_valid"] = runs.write_text_atomic(run_dir / "pairs_valid.jsonl", _jsonl(valid))
    else:
        (run_dir / "pairs_valid.jsonl").unlink(missing_ok=True)  # an earlier run's held-out pairs are not these
    outputs["rejected"] = runs.write_text_atomic(run_dir / "rejected.jsonl", _jsonl(ledger.rejected))
    outputs["stats"] = runs.write_json_atomic(run_dir / "stats.json", stats)
    runs.write_lineage(run_dir, config, inputs, outputs)
    if not ledger.kept:  # dpo would stop on the empty file; say why here, with the counts written
        rules = ", ".join(f"{rule} {n}" for rule, n in stats["dropped_by_rule"].items())
        raise UserError(f"adhere self-pairs: no pair kept of {len(prompts)} prompts ({rules}); see {run_dir}/stats.json "
                        "and rejected.jsonl; more samples, a higher temperature or a lower margin find more")
    return run_dir


def settings_of(config: ProjectConfig) -> SelfPairsConfig:
    """dpo.self_pairs, or a UserError saying how to add it."""
    if config.dpo is None or config.dpo.self_pairs is None:
        raise UserError("adhere self-pairs: adhere.yaml has no dpo.self_pairs section; add one (dpo: {self_pairs: "
                        "{samples: 4}}) to make preference pairs from the model's own answers")
    return config.dpo.self_pairs


def input_files(config: ProjectConfig) -> dict[str, Path]:
    """What the stage reads: workdir/data/train.jsonl, and the SFT weights when they are the sampling model."""
    train = config.stage_dir("data") / "train.jsonl"
    if not train.is_file():
        raise UserError(f"adhere self-pairs: {train} does not exist; run `adhere data {config.name}` first")
    ref = settings_of(config).model
    return {"train": train} | ({"weights": ref_weights(ref, config)} if ref.kind == "sft" else {})


def read_prompts(path: Path, limit: int) -> list[Prompt]:
    """The prompts of a canonical JSONL file (the first `limit`; 0: all), each cut before its last assistant turn."""
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        messages = json.loads(line)["messages"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or last == 0 or messages[last - 1]["role"] != "user":
            raise UserError(f"{path}:{number}: a record must end its prompt with a user turn followed by the "
                            "assistant's reference answer; rerun `adhere data`")
        record_id = json.loads(line).get("meta", {}).get("id") or f"line {number}"
        turns = [{"role": m["role"], "content": m["content"]} for m in messages[:last]]
        prompts.append(Prompt(str(record_id), turns, messages[last]["content"], f"{path.name}:{number}"))
        if limit and len(prompts) == limit:
            break
    if not prompts:
        raise UserError(f"{path}: no training prompts; check `adhere data` output")
    return prompts


def sample(sampler: Teacher, prompts: list[Prompt], settings: SelfPairsConfig) -> list[list[Generation]]:
    """`settings.samples` answers per prompt (sample k with seed + k), a batch of prompts at a time, so a budget
    stop leaves whole prompts unsampled rather than every prompt short of samples."""
    out: list[list[Generation]] = [[] for _ in prompts]
    for start in range(0, len(prompts), settings.batch_size):
        chats = [p.messages for p in prompts[start:start + settings.batch_size]]
        for k in range(settings.samples):
            params = GenerationParams(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                      top_p=settings.top_p, seed=settings.seed + k)
            for i, generation in enumerate(sampler.generate(chats, params)):
                out[start + i].append(generation)
    return out


@dataclass
class Candidate:
    """A prompt's outcome: the pair or the Rejection, and its graded samples and reference score for stats.json."""

    result: dict[str, Any] | Rejection
    samples: list[Sample]
    reference_score: float | None


def pair_for(prompt: Prompt, generations: list[Generation], score: Score, settings: SelfPairsConfig,
             model: str) -> Candidate:
    """The prompt's pair (chosen over the lowest-scoring sample), or why it has none."""
    if any(not_sent(g) for g in generations):
        return Candidate(Rejection("over_budget", "not every sample was drawn: dpo.self_pairs.budget was spent"), [], None)
    errors = [g.error or "the model failed" for g in generations if g.finish_reason == "error"]
    samples = [Sample(k, g.text, score(g.text, prompt.reference), g.finish_reason)
               for k, g in enumerate(generations) if g.finish_reason != "error" and g.text.strip()]
    reference_score = score(prompt.reference, prompt.reference)
    if not samples:
        rule = "generation_error" if errors else "empty_answers"
        reason = errors[0] if errors else f"all {len(generations)} samples were empty"
        return Candidate(Rejection(rule, reason), [], reference_score)
    rejected = min(samples, key=lambda s: s.score)  # min and max keep the first of ties
    best = max(samples, key=lambda s: s.score)
    chosen_text, chosen_score = (prompt.reference, reference_score) if settings.chosen == "reference" else (best.text, best.score)
    gap = chosen_score - rejected.score
    try:
        if _normalized(rejected.text) == _normalized(chosen_text):
            raise Rejection("identical_to_chosen", f"the lowest-scoring sample ({rejected.index}) is the chosen answer "
                            "(ignoring spacing): no worse answer was sampled")
        if gap + EPSILON < settings.margin:
            raise Rejection("gap_below_margin", f"chosen {chosen_score:.3f} - rejected {rejected.score:.3f} = {gap:.3f}, "
                            f"under dpo.self_pairs.margin {settings.margin}")
        turns = check_pair(prompt.messages, {"role": "assistant", "content": chosen_text},
                           {"role": "assistant", "content": rejected.text})
    except Rejection as problem:
        return Candidate(problem, samples, reference_score)
    chosen_sample = best.index if settings.chosen == "best" else None
    meta = {"id": f"self-{prompt.id}", "source": STAGE, "prompt_id": prompt.id, "prompt_location": prompt.location,
            "model": model, "grader": settings.grader, "chosen": settings.chosen, "chosen_sample": chosen_sample,
            "rejected_sample": rejected.index, "rejected_seed": settings.seed + rejected.index,
            "scores": {"chosen": round(chosen_score, 4), "rejected": round(rejected.score, 4),
                       "reference": round(reference_score, 4), "samples": [round(s.score, 4) for s in samples]},
            "sample_errors": len(errors)}
    pair = {"messages": turns, "chosen": {"role": "assistant", "content": chosen_text},
            "rejected": {"role": "assistant", "content": rejected.text}, "meta": meta}
    return Candidate(pair, samples, reference_score)


def reconcile(ledger: Ledger, graded: list[Candidate], sampler: Teacher, settings: SelfPairsConfig, train: int,
              valid: int, seconds: float) -> dict[str, Any]:
    """stats.json; raises if a prompt is unaccounted for (a bug, not bad input)."""
    if ledger.considered != len(ledger.kept) + len(ledger.rejected):
        raise AssertionError(f"{ledger.considered} prompts but {len(ledger.kept)} kept + {len(ledger.rejected)} dropped")
    scores = [s.score for c in graded for s in c.samples]
    references = [c.reference_score for c in graded if c.reference_score is not None]
    gaps = [p["meta"]["scores"]["chosen"] - p["meta"]["scores"]["rejected"] for p in ledger.kept]
    distinct = [len({_normalized(s.text) for s in c.samples}) for c in graded if c.samples]
    return {
        "model": sampler.name, "grader": settings.grader, "chosen": settings.chosen, "margin": settings.margin,
        "prompts": ledger.considered, "kept": len(ledger.kept), "dropped": len(ledger.rejected),
        "dropped_by_rule": dict(Counter(r["rule"] for r in ledger.rejected).most_common()),
        "pairs": train, "pairs_valid": valid,
        "samples_graded": len(scores),
        "mean_sample_score": _mean(scores), "mean_reference_score": _mean(references), "mean_kept_gap": _mean(gaps),
        # How many different answers a prompt got: 1.0 means the model says the same whatever the seed.
        "mean_distinct_answers": _mean(distinct),
        "histogram": {"bins": [round(i / BINS, 1) for i in range(BINS + 1)], "samples": _histogram(scores),
                      "references": _histogram(references)},
        "complete": sampler.budget.stopped is None and not sampler.budget.errors,
        "sampling": sampler.budget.summary(),
        "seconds": round(seconds, 2),
    }


def _histogram(values: list[float]) -> list[int]:
    counts = [0] * BINS
    for value in values:
        counts[min(int(value * BINS), BINS - 1)] += 1  # 1.0 falls in the last bin
    return counts


def _mean(values: list[float] | list[int]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _normalized(text: str) -> str:
    return " ".join(text.split())


def _jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
