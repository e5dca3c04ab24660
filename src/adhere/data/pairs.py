"""Preference pairs in the data stage: `data.pairs` files curated into pairs.jsonl and pairs_valid.jsonl.

    adhere data adhere.yaml      # with data.pairs: [{path: prefs.jsonl}]

Every pair row ends kept or rejected with a reason, as rows do: it is read and converted
(pair_formats.py), checked (empty or identical sides, a prompt the two sides do not share, a
side over train.max_length under the model's chat template or with no token to train), exact
duplicates dropped, its prompt decontaminated against the eval split and the benchmarks, and
audited for PII. A seeded share of the prompts (data.validation_fraction, as for valid.jsonl)
goes to pairs_valid.jsonl, every pair of a prompt on the same side, so held-out reward accuracy
is measured on prompts training never saw. A pair file none of whose rows survive is a UserError.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator

from adhere.data import curate
from adhere.data.config import DataConfig, Source
from adhere.data.formats import detect_format
from adhere.data.pair_formats import PAIR_CONVERTERS, PairConverter, check_pair, detect_pair_format, from_pair_columns
from adhere.data.records import Rejection
from adhere.data.sources import RawRow
from adhere.data.stage import (Ledger, Record, Steps, audit_pii, carve_validation, check_size, collect, converted_rows,
                               decontaminate, reconcile, row_fields, row_meta, validation_share)
from adhere.errors import UserError

if TYPE_CHECKING:
    from adhere.config import ProjectConfig
    from adhere.data.decontam import EvalIndex
    from adhere.spec.config import SpecConfig

# Fewer kept pairs than this and none are held out: one or two held-out pairs give a reward accuracy of
# 0, 50 or 100%, noise rather than a measurement.
MIN_PAIRS_FOR_VALIDATION = 5
SIDES = ("chosen", "rejected")


def curate_pairs(config: ProjectConfig, index: EvalIndex | None) -> tuple[dict[str, list[Record]], dict[str, Any], list[dict[str, Any]]]:
    """Curate data.pairs: returns the splits {'pairs', 'pairs_valid'}, their stats (for stats.json and the card)
    and the rejected pairs (for rejected.jsonl, each marked kind 'pair')."""
    data = config.data
    ledger, steps = Ledger(), Steps()
    started = time.perf_counter()
    pairs = [p for source in data.pairs for p in load_pairs(source, data, config.spec, ledger)]
    steps.seconds["load_and_validate"] = round(time.perf_counter() - started, 2)
    if data.dedup.exact:
        pairs = steps.apply("exact_dedup", lambda ps: curate.exact_dedup(ps, pair_key, "prompt, chosen and rejected"),
                            pairs, ledger)
    if data.token_checks:
        from adhere.models import load_tokenizer

        tokenizer = load_tokenizer(config.model)
        check = lambda ps: pair_token_filter(ps, tokenizer, config.train.max_length, config.model.base)  # noqa: E731
        pairs = steps.apply("tokens", check, pairs, ledger)
    if index is not None:
        pairs = steps.apply("decontam", lambda ps: decontaminate(ps, index), pairs, ledger)
    pairs, pii = pairs_pii(pairs, data.pii, ledger, steps)
    # Held-out pairs are for DPO's evaluations: with dpo.eval_every (or train.eval_every) set, auto holds 5% out
    evaluated = bool(config.train.eval_every or (config.dpo is not None and config.dpo.eval_every))
    train, valid = carve_pairs(pairs, validation_share(config, evaluated), data.seed)
    splits = {"pairs": train, "pairs_valid": valid}
    stats = reconcile(ledger, {"train": train, "valid": valid}, steps, data)
    stats.pop("eval_from")
    stats["pii"] = pii
    require_survivors(stats, ledger)
    for row in ledger.rejected:
        row["kind"] = "pair"
    return splits, stats, ledger.rejected


def load_pairs(source: Source, data: DataConfig, spec: SpecConfig, ledger: Ledger) -> list[Record]:
    """Read, convert and check one pair file; rejected rows go to the ledger."""
    pairs = collect(source, source_pairs(source, data, spec), data.seed, ledger)
    if not ledger.rows_in[source.path]:
        raise UserError(f"{source.path}: no rows (data.pairs); give a file of preference pairs, or remove it")
    return pairs


def source_pairs(source: Source, data: DataConfig, spec: SpecConfig) -> Iterator[tuple[RawRow, Record | Rejection]]:
    """Each row of a pair file with its canonical pair or the reason it has none."""
    build = lambda raw, convert, fmt: to_pair(raw, convert, fmt, data, spec)  # noqa: E731
    return converted_rows(source, PAIR_CONVERTERS, detect_pair_format, from_pair_columns, build)


def to_pair(raw: RawRow, convert: PairConverter | None, fmt: str, data: DataConfig, spec: SpecConfig) -> Record:
    """One raw row as a checked, normalised canonical pair, or a Rejection."""
    formats = "pair format (trl's prompt/chosen/rejected, or adhere's messages/chosen/rejected)"
    if raw.fields is not None and detect_format(raw.fields):
        formats = "pair format (an instruction row? list the file under data.sources)"
    prompt, chosen, rejected = convert(row_fields(raw, convert, formats))  # type: ignore[misc]  (checked there)
    check_size([*prompt, chosen, rejected], data)
    if spec.system_prompt and prompt and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": spec.system_prompt}, *prompt]  # framed as rows, eval and serving are
    turns = curate.normalize({"messages": [*prompt, chosen, rejected]})["messages"]
    prompt = check_pair(turns[:-2], turns[-2], turns[-1])
    pair = {"messages": prompt, "chosen": {"role": "assistant", "content": turns[-2]["content"]},
            "rejected": {"role": "assistant", "content": turns[-1]["content"]}}
    meta = row_meta(raw, fmt)
    meta.setdefault("id", hashlib.sha1(json.dumps(pair, sort_keys=True).encode()).hexdigest()[:16])
    return {**pair, "meta": meta}


def pair_key(pair: Record) -> str:
    """Case-folded words of each prompt turn and of both sides: equal keys are exact duplicates."""
    parts = [*(m["content"] for m in pair["messages"]), pair["chosen"]["content"], pair["rejected"]["content"]]
    return " | ".join(" ".join(curate.WORD.findall(part.casefold())) for part in parts)


def side_messages(pair: Record, side: str) -> list[dict[str, Any]]:
    """The prompt and one side as a chat that trains only that side (earlier assistant turns are context)."""
    prompt = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in pair["messages"]]
    return [*prompt, {**pair[side], "weight": 1}]


def pair_token_filter(pairs: list[Record], tokenizer: Any, max_length: int, model_name: str) -> tuple[list[Record], curate.Dropped]:
    """Drop pairs a side of which is over train.max_length tokens, or trains no token; note the counts in meta."""
    kept, dropped = [], []
    for pair in pairs:
        rendered = {side: curate.rendered_tokens(side_messages(pair, side), tokenizer, max_length, model_name,
                                                 f"the {side} side: ") for side in SIDES}
        problem = next((r for r in rendered.values() if isinstance(r, Rejection)), None)
        if problem is not None:
            dropped.append((pair, problem))
            continue
        for side, r in rendered.items():
            pair["meta"][f"{side}_tokens"], pair["meta"][f"{side}_trained_tokens"] = len(r.input_ids), r.trained_tokens
        kept.append(pair)
    return kept, dropped


def pairs_pii(pairs: list[Record], action: str, ledger: Ledger, steps: Steps) -> tuple[list[Record], dict[str, Any]]:
    """The PII audit of the kept pairs, over prompt and both sides, with the action rows get (flag, redact, drop)."""
    started = time.perf_counter()
    views = [{"messages": [*p["messages"], p["chosen"], p["rejected"]], "meta": p["meta"]} for p in pairs]
    audit = audit_pii(views, action)
    flagged = {id(v): kinds for v, kinds in zip(audit["records"], audit["kinds"])}
    kept = []
    for pair, view in zip(pairs, views):
        if action == "redact":  # audit_pii redacted the views' messages; put them back in place
            pair["messages"], pair["chosen"], pair["rejected"] = view["messages"][:-2], view["messages"][-2], view["messages"][-1]
        if action == "drop" and id(view) in flagged:
            steps.dropped["pii"] = steps.dropped.get("pii", 0) + ledger.reject_records(
                [(pair, Rejection("pii", f"contains {', '.join(flagged[id(view)])}"))])
        else:
            kept.append(pair)
    steps.seconds["pii_audit"] = round(time.perf_counter() - started, 2)
    return kept, {k: v for k, v in audit.items() if k not in ("records", "kinds")}


def carve_pairs(pairs: list[Record], share: float, seed: int) -> tuple[list[Record], list[Record]]:
    """The held-out pairs: carve_validation's seeded share, over prompts (all pairs of a prompt on one side),
    once there are MIN_PAIRS_FOR_VALIDATION pairs. Returns (train, valid), both in file order."""
    if len(pairs) < MIN_PAIRS_FOR_VALIDATION:
        return pairs, []
    prompts = list(dict.fromkeys(json.dumps(p["messages"], sort_keys=True) for p in pairs))
    _, held = carve_validation(prompts, share, seed)  # type: ignore[arg-type]  (any list carves alike)
    held_out = set(held)
    valid = [p for p in pairs if json.dumps(p["messages"], sort_keys=True) in held_out]
    return [p for p in pairs if json.dumps(p["messages"], sort_keys=True) not in held_out], valid


def require_survivors(stats: dict[str, Any], ledger: Ledger) -> None:
    """A UserError for the first pair file whose rows were all rejected, naming its commonest reason with an example."""
    for path, counts in stats["sources"].items():
        if counts["kept"]:
            continue
        rule, n = Counter(counts["by_rule"]).most_common(1)[0]
        example = next(r for r in ledger.rejected if r["source"] == path and r["rule"] == rule)
        raise UserError(f"{path}: all {counts['rows_in']} pairs were rejected (data.pairs), most for {rule!r} "
                        f"({n} of them; {example['location']}: {example['reason']}); fix the file or its format")
