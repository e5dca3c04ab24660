"""Step 2, collect and curate: every source row ends in train, valid, eval or rejected, with a reason.

    adhere data adhere.yaml

Reads `data.sources`, validates every row, curates (normalise, exact and near
dedup, quality heuristics, spec checks, decontamination against the eval split
and every benchmark the project evaluates on, PII audit), splits, and writes
`workdir/data/`: train.jsonl, valid.jsonl (the validation split training
evaluates on, when there is one), eval.jsonl, rejected.jsonl, stats.json and
card.md. The counts reconcile: rows_in = kept + rejected, per source and in total.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from adhere import runs
from adhere.data import curate, decontam
from adhere.data.config import DataConfig, Source
from adhere.data.formats import CONVERTERS, detect_format, from_columns
from adhere.data.pair_formats import detect_pair_format
from adhere.data.records import Rejection, prompt_text
from adhere.data.sources import RawRow, read_rows
from adhere.errors import UserError, require_files

if TYPE_CHECKING:
    from adhere.config import ProjectConfig
    from adhere.spec.config import SpecConfig

Record = dict[str, Any]
# Auto validation split with train.eval_every: 5% of the training rows, enough to see the eval loss turn
# (50 rows of 1,000) while training keeps 95% of them.
AUTO_VALIDATION = 0.05


class Ledger:
    """Every row in, and where it went: the counts `stats.json` reconciles."""

    def __init__(self) -> None:
        self.rows_in: Counter[str] = Counter()
        self.rejected: list[dict[str, Any]] = []
        self.by_source: dict[str, Counter[str]] = defaultdict(Counter)

    def reject(self, source: str, location: str, rejection: Rejection, content: Any) -> None:
        """Record one dropped row with its reason."""
        self.by_source[source][rejection.rule] += 1
        self.rejected.append(
            {"source": source, "location": location, "rule": rejection.rule, "reason": rejection.reason, "row": content}
        )

    def reject_records(self, dropped: Iterable[tuple[Record, Rejection]]) -> int:
        """Record dropped canonical records; returns how many."""
        count = 0
        for record, rejection in dropped:
            content = {key: record[key] for key in ("messages", "chosen", "rejected") if key in record}  # a row or a pair
            self.reject(record["meta"]["source"], record["meta"]["row"], rejection, content)
            count += 1
        return count


def run(config: ProjectConfig) -> Path:
    """Curate the configured sources into `workdir/data/`; return that folder."""
    from adhere.data.report import write_card, write_outputs

    data = config.data
    if not data.sources:
        raise UserError("data.sources is empty: list at least one file, e.g. sources: [{path: data/train.jsonl}]")
    inputs = input_files(config)
    require_files(inputs)
    run_dir = runs.start_stage(config, "data")
    ledger, steps = Ledger(), Steps()
    records, eval_records, coverage = load_and_filter(config, ledger, steps)
    train, evals = (records, eval_records) if eval_records is not None else split(records, data)
    targets: list[dict[str, Any]] = []
    index = None
    if data.decontam.enabled:
        index, targets = decontam_index(evals, config)
        train = steps.apply("decontam", lambda rs: decontaminate(rs, index), train, ledger)
    train, evals, pii = pii_step(train, evals, data.pii, ledger, steps)
    train, valid = carve_validation(train, validation_share(config), data.seed)
    splits = {"train": train, "valid": valid, "eval": evals}

    stats = reconcile(ledger, splits, steps, data)
    stats["pii"] = pii
    stats["embedding_clusters"] = coverage
    stats["decontam_targets"] = targets
    pairs, rejected = {}, ledger.rejected
    if data.pairs:  # without pairs nothing below changes: the outputs of row-only projects stay byte-identical
        from adhere.data.pairs import curate_pairs

        pairs, stats["pairs"], rejected_pairs = curate_pairs(config, index)
        rejected = rejected + rejected_pairs
    outputs = write_outputs(run_dir, splits, rejected, pairs)
    write_card(run_dir, config, stats, splits, rejected)
    runs.write_json_atomic(run_dir / "stats.json", stats)
    runs.write_lineage(run_dir, config, inputs, outputs)
    return run_dir


def input_files(config: ProjectConfig) -> dict[str, Path]:
    """Every file the data stage reads, by its config key: the sources, eval_file and the decontamination targets."""
    data = config.data
    files = {f"data.sources[{i}].path": Path(s.path) for i, s in enumerate(data.sources)}
    files |= {f"data.pairs[{i}].path": Path(s.path) for i, s in enumerate(data.pairs)}
    if data.eval_file:
        files["data.eval_file"] = Path(data.eval_file)
    if data.decontam.enabled:
        files |= decontam.benchmark_files(config)
    return files


def pair_files(config: ProjectConfig) -> dict[str, Path]:
    """The preference pairs the data stage wrote, by name: 'pairs' (pairs.jsonl, when data.pairs is set) and
    'pairs_valid' (pairs_valid.jsonl, the held-out pairs, when that file exists); empty without data.pairs."""
    if not config.data.pairs:
        return {}
    folder = config.stage_dir("data")
    files = {"pairs": folder / "pairs.jsonl"}
    if (folder / "pairs_valid.jsonl").is_file():
        files["pairs_valid"] = folder / "pairs_valid.jsonl"
    return files


def load_and_filter(config: ProjectConfig, ledger: Ledger, steps: Steps) -> tuple[list[Record], list[Record] | None, Any]:
    """Load, validate, dedup and filter the sources (and data.eval_file); returns them and the embedding coverage."""
    data = config.data
    started = time.perf_counter()
    records = [r for source in data.sources for r in load_source(source, data, config.spec, ledger)]
    eval_records = load_source(Source(path=data.eval_file), data, config.spec, ledger) if data.eval_file else None
    steps.seconds["load_and_validate"] = round(time.perf_counter() - started, 2)

    if data.dedup.exact:
        records = steps.apply("exact_dedup", curate.exact_dedup, records, ledger)
    if data.dedup.near:
        records = steps.apply("near_dedup", lambda rs: curate.near_dedup(rs, data.dedup, seed=data.seed), records, ledger)
    coverage = None
    if data.dedup.semantic:
        from adhere.data.semantic import cluster_coverage, record_vectors, semantic_dedup

        vectors = record_vectors(records)
        index = {id(r): i for i, r in enumerate(records)}
        records = steps.apply("semantic_dedup", lambda rs: semantic_dedup(rs, vectors, data.dedup.semantic_threshold), records, ledger)
        coverage = cluster_coverage(vectors[[index[id(r)] for r in records]], seed=data.seed)
    records = steps.apply("quality", lambda rs: curate.quality_filter(rs, data.quality), records, ledger)
    if data.token_checks:
        from adhere.models import load_tokenizer

        tokenizer = load_tokenizer(config.model)
        check = lambda rs: curate.token_filter(rs, tokenizer, config.train.max_length, config.model.base)  # noqa: E731
        records = steps.apply("tokens", check, records, ledger)
        if eval_records is not None:
            eval_records = steps.apply("tokens_eval_file", check, eval_records, ledger)
    return records, eval_records, coverage


def pii_step(train: list[Record], evals: list[Record], action: str, ledger: Ledger,
             steps: Steps) -> tuple[list[Record], list[Record], dict[str, Any]]:
    """The PII audit of the kept records; with action 'drop' the flagged ones go to the ledger."""
    started = time.perf_counter()
    audit = audit_pii(train + evals, action)
    if action == "drop":
        flagged = {id(r): kinds for r, kinds in zip(audit["records"], audit["kinds"])}
        steps.dropped["pii"] = ledger.reject_records(
            (r, Rejection("pii", f"contains {', '.join(flagged[id(r)])}")) for r in train + evals if id(r) in flagged
        )
        train, evals = [r for r in train if id(r) not in flagged], [r for r in evals if id(r) not in flagged]
    steps.seconds["pii_audit"] = round(time.perf_counter() - started, 2)
    return train, evals, {k: v for k, v in audit.items() if k not in ("records", "kinds")}


class Steps:
    """What each curation step dropped and how long it took, for stats.json and the card."""

    def __init__(self) -> None:
        self.dropped: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def apply(self, name: str, step: Callable[[list[Record]], tuple[list[Record], list[tuple[Record, Rejection]]]],
              records: list[Record], ledger: Ledger) -> list[Record]:
        """Run one step over `records`; its drops go to the ledger; returns the kept records."""
        started = time.perf_counter()
        kept, dropped = step(records)
        self.dropped[name] = self.dropped.get(name, 0) + ledger.reject_records(dropped)
        self.seconds[name] = round(time.perf_counter() - started, 2)
        return kept


def load_source(source: Source, data: DataConfig, spec: SpecConfig, ledger: Ledger) -> list[Record]:
    """Read, convert, validate and normalise one source's rows; rejected rows go to the ledger."""
    return collect(source, source_records(source, data, spec), data.seed, ledger)


def collect(source: Source, results: Iterable[tuple[RawRow, Record | Rejection]], seed: int, ledger: Ledger) -> list[Record]:
    """The records of one source's converted rows, each row counted in and each rejection in the ledger; then a
    seeded sample of `source.max_rows` of them, the rest in the ledger as not sampled."""
    records: list[Record] = []
    for raw, result in results:
        ledger.rows_in[source.path] += 1
        if isinstance(result, Rejection):
            ledger.reject(source.path, raw.location, result, raw.fields)
        else:
            records.append(result)
    if source.max_rows is not None and len(records) > source.max_rows:
        rng = random.Random(seed)
        keep = set(rng.sample(range(len(records)), source.max_rows))
        cap = Rejection("not_sampled", f"source capped at max_rows={source.max_rows} (seeded sample)")
        ledger.reject_records((r, cap) for i, r in enumerate(records) if i not in keep)
        records = [r for i, r in enumerate(records) if i in keep]
    return records


def source_records(source: Source, data: DataConfig, spec: SpecConfig) -> Iterator[tuple[RawRow, Record | Rejection]]:
    """Each row of a source with its canonical record or the reason it has none."""
    build = lambda raw, convert, fmt: to_record(raw, convert, fmt, data, spec)  # noqa: E731
    return converted_rows(source, CONVERTERS, detect_format, from_columns, build)


def converted_rows(source: Source, converters: dict[str, Callable], detect: Callable[[dict[str, Any]], str | None],
                   columns: Callable[[dict[str, str]], Callable],
                   build: Callable[[RawRow, Callable | None, str], Record]) -> Iterator[tuple[RawRow, Record | Rejection]]:
    """Each row of a source with what `build` makes of it (given its format's converter, None when no format fits,
    and the format's name) or the Rejection it raised; format 'auto' is detected from the first row."""
    fmt = source.format
    convert = columns(source.columns) if fmt == "columns" else converters.get(fmt)
    for raw in read_rows(source.path):
        if convert is None and raw.fields is not None:
            fmt = detect(raw.fields) or "auto"
            convert = converters.get(fmt)
        try:
            yield raw, build(raw, convert, fmt)
        except Rejection as rejection:
            yield raw, rejection


def row_fields(raw: RawRow, convert: Callable | None, formats: str) -> dict[str, Any]:
    """A raw row's fields, or the Rejection of a row that could not be read or fits none of `formats`."""
    if raw.error is not None:
        raise raw.error
    assert raw.fields is not None
    if convert is None:
        fields = ", ".join(sorted(raw.fields)) or "none"
        raise Rejection("unknown_format", f"fields ({fields}) match no {formats}; set the source's format or columns")
    return raw.fields


def check_size(messages: list[dict[str, Any]], data: DataConfig) -> None:
    """Reject text longer than data.max_chars before anything else looks at it."""
    size = sum(len(m["content"]) for m in messages)
    if size > data.max_chars:
        raise Rejection("too_long", f"{size} characters of text, more than data.max_chars={data.max_chars}")


def row_meta(raw: RawRow, fmt: str) -> dict[str, Any]:
    """A record's meta: the row's own, its type/category/task, and where it came from (source, row, format)."""
    assert raw.fields is not None
    meta = dict(raw.fields["meta"]) if isinstance(raw.fields.get("meta"), dict) else {}
    for key in ("type", "category", "task"):
        if isinstance(raw.fields.get(key), str):
            meta.setdefault(key, raw.fields[key])
    meta.update(source=raw.source, row=raw.location, format=fmt)
    return meta


def to_record(raw: RawRow, convert: Callable | None, fmt: str, data: DataConfig, spec: SpecConfig) -> Record:
    """One raw row as a validated, normalised canonical record, or a Rejection."""
    formats = "known format" if raw.fields is None or not detect_pair_format(raw.fields) else (
        "row format (a preference pair? list the file under data.pairs)")
    messages = convert(row_fields(raw, convert, formats))  # type: ignore[misc]  (row_fields checked it)
    check_size(messages, data)
    meta = row_meta(raw, fmt)
    if spec.system_prompt and messages[0]["role"] != "system":
        # The spec's system prompt frames every conversation, here and in evaluation and serving alike.
        messages = [{"role": "system", "content": spec.system_prompt, "weight": 1}, *messages]
    record = curate.normalize({"messages": messages, "meta": meta})
    if data.check_spec:
        check_against_spec(record, spec)
    return record


def check_against_spec(record: Record, spec: SpecConfig) -> None:
    """Reject a record whose final response fails one of the spec's constraints."""
    response = record["messages"][-1]["content"]
    for constraint in spec.constraints:
        if not constraint.check(response):
            raise Rejection("spec_violation", f"the response fails the spec's constraint {constraint.label}")


def split(records: list[Record], data: DataConfig) -> tuple[list[Record], list[Record]]:
    """A seeded train/eval split; with `stratify_by`, each value of that meta field is split alike."""
    groups: dict[Any, list[Record]] = defaultdict(list)
    for record in records:
        groups[record["meta"].get(data.stratify_by) if data.stratify_by else None].append(record)
    rng = random.Random(data.seed)
    train, evals = [], []
    for key in sorted(groups, key=str):
        group = groups[key]
        rng.shuffle(group)
        n_eval = round(len(group) * data.eval_fraction)
        if data.eval_fraction > 0 and n_eval == 0 and len(group) > 1:
            n_eval = 1  # every stratum is represented in eval
        evals += group[:n_eval]
        train += group[n_eval:]
    return train, evals


def decontam_index(evals: list[Record], config: ProjectConfig) -> tuple[decontam.EvalIndex, list[dict[str, Any]]]:
    """The n-grams of every evaluation prompt: the eval split's, and each benchmark's (listed with its prompt count)."""
    index = decontam.EvalIndex(config.data.decontam.ngram)
    for record in evals:
        index.add(prompt_text(record), f"the eval split ({curate.where(record)})")
    targets = []
    for key, path in decontam.benchmark_files(config).items():
        before = index.prompts
        for prompt, label in decontam.target_prompts(path, key):
            index.add(prompt, label)
        targets.append({"key": key, "path": str(path), "prompts": index.prompts - before})
    return index, targets


def decontaminate(train: list[Record], index: decontam.EvalIndex) -> tuple[list[Record], list[tuple[Record, Rejection]]]:
    """Drop training records whose prompts overlap an evaluation prompt in `index`."""
    kept, dropped = [], []
    for record in train:
        problem = decontam.check(record, index)
        if problem:
            dropped.append((record, problem))
        else:
            kept.append(record)
    return kept, dropped


def validation_share(config: ProjectConfig, evaluated: bool | None = None) -> float:
    """data.validation_fraction; unset (auto), AUTO_VALIDATION when the split is evaluated on (`evaluated`; by default
    whether train.eval_every is set), else 0."""
    fraction = config.data.validation_fraction
    if fraction is None:
        evaluated = bool(config.train.eval_every) if evaluated is None else evaluated
        return AUTO_VALIDATION if evaluated else 0.0
    return fraction


def carve_validation(train: list[Record], share: float, seed: int) -> tuple[list[Record], list[Record]]:
    """A seeded `share` of the training records as the validation split: at least one when the share is above 0
    and there are two or more records, and never all of them. Returns (train, valid), both in file order."""
    if share <= 0 or len(train) < 2:
        return train, []
    n_valid = min(max(1, round(len(train) * share)), len(train) - 1)
    picked = set(random.Random(seed).sample(range(len(train)), n_valid))
    return [r for i, r in enumerate(train) if i not in picked], [r for i, r in enumerate(train) if i in picked]


def audit_pii(records: list[Record], action: str) -> dict[str, Any]:
    """PII findings over records; with action 'redact' the records' contents are redacted in place."""
    from adhere.data import audit

    result = audit.audit_records(records)
    flagged, kinds_by_record, listed = [], {}, []
    for index, by_message in result.findings.items():
        record = records[index]
        kinds = sorted({f.kind for found in by_message.values() for f in found})
        kinds_by_record[id(record)] = kinds
        flagged.append(record)
        listed.append({"where": curate.where(record), "kinds": kinds})
        if action == "redact":
            record["messages"] = audit.redact_record(record, by_message)["messages"]
            record["meta"]["redacted"] = kinds
    return {
        "action": action,
        "flagged_rows": len(flagged),
        "totals": {kind: n for kind, n in result.totals.items() if n},
        "flagged": listed,
        "demographics": result.balance,
        "records": flagged,
        "kinds": [kinds_by_record[id(r)] for r in flagged],
    }


def reconcile(ledger: Ledger, splits: dict[str, list[Record]], steps: Steps, data: DataConfig) -> dict[str, Any]:
    """Per-source and total counts; raises if any row is unaccounted for (a bug, not bad input).

    Every row in ends in exactly one of train, valid, eval or rejected.
    """
    kept: Counter[str] = Counter(r["meta"]["source"] for records in splits.values() for r in records)
    sources = {}
    for path, rows_in in ledger.rows_in.items():
        rejected = ledger.by_source[path]
        sources[path] = {"rows_in": rows_in, "kept": kept[path], "rejected": sum(rejected.values()), "by_rule": dict(rejected)}
        if rows_in != kept[path] + sum(rejected.values()):
            raise AssertionError(f"{path}: {rows_in} rows in but {kept[path]} kept + {sum(rejected.values())} rejected")
    by_rule: Counter[str] = Counter(r["rule"] for r in ledger.rejected)
    return {
        "rows_in": sum(ledger.rows_in.values()),
        "kept": sum(kept.values()),
        "rejected": len(ledger.rejected),
        **{name: len(records) for name, records in splits.items()},
        "rejected_by_rule": dict(by_rule.most_common()),
        "curation_dropped": steps.dropped,
        "seconds": steps.seconds,
        "sources": sources,
        "eval_from": "eval_file" if data.eval_file else f"split ({data.eval_fraction:.0%}, seed {data.seed})",
    }
