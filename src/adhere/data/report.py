"""What the data stage writes: the JSONL files, and a data card with plots for people.

card.md shows the counts and how they reconcile, rejections by rule with an
example each, what each curation step dropped, the PII audit and demographic
balance, and the diversity of the instructions (lead words, lengths, turns,
task types), with length histograms as PNG files beside it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adhere import runs
from adhere.data.records import prompt_text, response_text

if TYPE_CHECKING:
    from adhere.config import ProjectConfig

Record = dict[str, Any]
WORD = re.compile(r"\w+")
# Polite openers that precede the real lead verb: "Please review ...", "Can you explain ...".
OPENERS = {"please", "can", "could", "would", "will", "you", "kindly", "now", "i", "want", "need", "to", "help", "me"}
LOW_DIVERSITY_SHARE = 0.5  # one lead word over half the data: the model learns one task, not many


def write_outputs(run_dir: Path, splits: dict[str, list[Record]], rejected: list[dict[str, Any]],
                  pairs: dict[str, list[Record]] | None = None) -> dict[str, Path]:
    """Write train.jsonl, valid.jsonl, eval.jsonl, rejected.jsonl and the `pairs` splits (pairs.jsonl,
    pairs_valid.jsonl) atomically; return their paths.

    valid.jsonl and pairs_valid.jsonl are written only when they have rows, pairs.jsonl only with data.pairs;
    one left by an earlier run is removed, so training never reads a stale one.
    """
    outputs = {}
    pairs = pairs or {}
    for name, rows in (*splits.items(), ("rejected", rejected), *pairs.items()):
        if name in ("valid", "pairs_valid") and not rows:
            (run_dir / f"{name}.jsonl").unlink(missing_ok=True)
            continue
        text = "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
        outputs[name] = runs.write_text_atomic(run_dir / f"{name}.jsonl", text)
    for name in ("pairs", "pairs_valid"):
        if name not in pairs:
            (run_dir / f"{name}.jsonl").unlink(missing_ok=True)
    return outputs


def lead_words(prompt: str) -> tuple[str, str]:
    """The first content word of an instruction and the word after it ('review', 'code')."""
    words = [w for w in WORD.findall(prompt.casefold()) if not w.isdigit()]
    while words and words[0] in OPENERS:
        words.pop(0)
    return (words[0] if words else "", words[1] if len(words) > 1 else "")


def diversity(records: list[Record]) -> dict[str, Any]:
    """Lead words and pairs, lengths in words, turn counts and task types of the kept records."""
    leads = Counter(lead_words(prompt_text(r)) for r in records)
    verbs = Counter(pair[0] for pair in leads.elements())
    types = Counter(str(r["meta"].get("type") or r["meta"].get("category") or r["meta"].get("task") or "") for r in records)
    top = verbs.most_common(1)
    share = top[0][1] / len(records) if records and top else 0.0
    warning = None
    if records and share > LOW_DIVERSITY_SHARE:
        warning = f"low diversity: {share:.0%} of instructions start with {top[0][0]!r}"
    return {
        "lead_words": dict(verbs.most_common(20)),
        "lead_pairs": {f"{a} {b}".strip(): n for (a, b), n in leads.most_common(20)},
        "distinct_lead_words": len(verbs),
        "top_lead_share": round(share, 4),
        "turns": dict(sorted(Counter(len(r["messages"]) for r in records).items())),
        "types": {k: v for k, v in types.most_common() if k},
        "warning": warning,
    }


def origin(record: Record) -> str:
    """'human', or 'synthetic: <generator> by <teacher>' for a record `adhere synth` made (its meta says so)."""
    meta = record["meta"]
    if not meta.get("synthetic"):
        return "human"
    return f"synthetic: {meta.get('generator', '?')} by {meta.get('teacher', '?')}"


def provenance(splits: dict[str, list[Record]]) -> dict[str, dict[str, int]]:
    """Kept records by origin, human or synthetic (per generator and teacher), in each split."""
    counts: dict[str, dict[str, int]] = {}
    for split, records in splits.items():
        for record in records:
            counts.setdefault(origin(record), dict.fromkeys(splits, 0))[split] += 1
    return dict(sorted(counts.items(), key=lambda item: (item[0] != "human", item[0])))


def _lengths(records: list[Record]) -> tuple[list[int], list[int], str]:
    """Prompt and response lengths: in tokens when the token checks counted them, else in words."""
    if all("tokens" in r["meta"] for r in records):
        prompts = [r["meta"]["tokens"] - r["meta"]["trained_tokens"] for r in records]
        return prompts, [r["meta"]["trained_tokens"] for r in records], "tokens"
    return (
        [len(WORD.findall(prompt_text(r))) for r in records],
        [len(WORD.findall(response_text(r))) for r in records],
        "words",
    )


def _plot_lengths(run_dir: Path, records: list[Record]) -> str | None:
    if not records:
        return None
    plt = _pyplot()
    prompts, responses, unit = _lengths(records)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    titles = ("prompt (with chat template, not trained)", "response (trained)") if unit == "tokens" else ("instruction", "response")
    for ax, values, title in ((axes[0], prompts, titles[0]), (axes[1], responses, titles[1])):
        ax.hist(values, bins=min(30, max(values) - min(values) + 1), color="#4C72B0")
        ax.set_title(title)
        ax.set_xlabel(unit)
        ax.set_ylabel("examples")
    return _save(fig, run_dir / "lengths.png")


def _plot_lead_words(run_dir: Path, stats: dict[str, Any]) -> str | None:
    words = stats["lead_words"]
    if not words:
        return None
    plt = _pyplot()
    items = list(words.items())[:15][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 1))
    ax.barh([w or "(none)" for w, _ in items], [n for _, n in items], color="#55A868")
    ax.set_title("lead words of instructions")
    ax.set_xlabel("examples")
    return _save(fig, run_dir / "lead_words.png")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> str:
    """Save a figure beside card.md; returns the name the card links."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path.name


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_card(
    run_dir: Path, config: ProjectConfig, stats: dict[str, Any], splits: dict[str, list[Record]],
    rejected: list[dict[str, Any]],
) -> Path:
    """Write card.md and its plots; adds the diversity report to `stats`."""
    kept = [record for records in splits.values() for record in records]
    stats["diversity"] = diversity(kept)
    stats["provenance"] = provenance(splits)
    lengths = _plot_lengths(run_dir, kept)
    leads = _plot_lead_words(run_dir, stats["diversity"])
    examples: dict[str, dict[str, Any]] = {}
    for row in rejected:
        if row.get("kind") != "pair":
            examples.setdefault(row["rule"], row)
    out = [f"# Data card: {config.name}", ""]
    out += [f"{stats['rows_in']} rows in: {split_counts(stats)}, {stats['rejected']} rejected "
            f"(eval from {stats['eval_from']}). Every rejected row is in `rejected.jsonl` with its reason.", ""]
    if not stats["valid"]:
        out += ["No validation split: set `train.eval_every` (5% of the training rows are then held out) or "
                "`data.validation_fraction` for early stopping and best-weight selection.", ""]
    out += ["## Sources", "", _table(
        ["source", "rows in", "kept", "rejected"],
        [[Path(p).name, s["rows_in"], s["kept"], s["rejected"]] for p, s in stats["sources"].items()],
    ), ""]
    if stats["rejected"]:
        out += ["## Rejections by rule", "", _table(
            ["rule", "rows", "example"],
            [[rule, n, f"{Path(examples[rule]['source']).name} {examples[rule]['location']}: {examples[rule]['reason']}"]
             for rule, n in stats["rejected_by_rule"].items()],
        ), ""]
    seconds = stats["seconds"]
    out += ["## Curation", "", _table(
        ["step", "dropped", "seconds"],
        [["load and validate", stats["rejected"] - sum(stats["curation_dropped"].values()), seconds.get("load_and_validate", "")]]
        + [[k, v, seconds.get(k, "")] for k, v in stats["curation_dropped"].items()],
    ), ""]
    if any(name != "human" for name in stats["provenance"]):
        out += ["## Provenance", "", "Synthetic rows are those `adhere synth` wrote (meta.synthetic); the rest are human.", "",
                _table(["origin", "train", "validation", "eval"],
                       [[k, v["train"], v["valid"], v["eval"]] for k, v in stats["provenance"].items()]), ""]
    if "pairs" in stats:
        out += _pairs_section(stats["pairs"], [row for row in rejected if row.get("kind") == "pair"])
    out += _decontam_section(stats["decontam_targets"], stats["curation_dropped"].get("decontam"))
    out += _pii_section(stats["pii"])
    div = stats["diversity"]
    out += ["## Diversity", ""]
    if div["warning"]:
        out += [f"**Warning: {div['warning']}.**", ""]
    out += [f"{div['distinct_lead_words']} distinct lead words; the most common covers {div['top_lead_share']:.0%}.", ""]
    clusters = stats.get("embedding_clusters")
    if clusters:
        out += [f"Embedding clusters (k-means on all-MiniLM-L6-v2 vectors): {clusters['effective_clusters']} effective of "
                f"{clusters['clusters']} (coverage {clusters['coverage']:.0%}; the largest holds {clusters['largest_share']:.0%}).", ""]
    if leads:
        out += [f"![lead words]({leads})", ""]
    out += [_table(["lead words", "examples"], [[k, v] for k, v in list(div["lead_pairs"].items())[:10]]), ""]
    out += [_table(["turns", "examples"], [[k, v] for k, v in div["turns"].items()]), ""]
    if div["types"]:
        out += [_table(["task type", "examples"], [[k, v] for k, v in div["types"].items()]), ""]
    if lengths:
        out += ["## Lengths", "", f"![lengths]({lengths})", ""]
    return runs.write_text_atomic(run_dir / "card.md", "\n".join(out))


def split_counts(stats: dict[str, Any]) -> str:
    """'90 train, 5 validation, 10 eval': the sizes of the splits the data stage wrote."""
    return f"{stats['train']} train, {stats['valid']} validation, {stats['eval']} eval"


def _pairs_section(pairs: dict[str, Any], rejected: list[dict[str, Any]]) -> list[str]:
    """Preference pairs (data.pairs): counts, sources, and every reason a pair was dropped, with an example."""
    examples: dict[str, dict[str, Any]] = {}
    for row in rejected:
        examples.setdefault(row["rule"], row)
    out = ["## Pairs", "", f"{pairs['rows_in']} preference pairs in: {pairs['train']} in `pairs.jsonl`, "
           f"{pairs['valid']} held out in `pairs_valid.jsonl`, {pairs['rejected']} rejected (in `rejected.jsonl` "
           f"with kind 'pair'); {pairs['pii']['flagged_rows']} contain personal data (action: {pairs['pii']['action']}).", ""]
    out += [_table(["pair file", "pairs in", "kept", "rejected"],
                   [[Path(p).name, s["rows_in"], s["kept"], s["rejected"]] for p, s in pairs["sources"].items()]), ""]
    if rejected:
        out += [_table(["rule", "pairs", "example"],
                       [[rule, n, f"{Path(examples[rule]['source']).name} {examples[rule]['location']}: {examples[rule]['reason']}"]
                        for rule, n in pairs["rejected_by_rule"].items()]), ""]
    return out


def _decontam_section(targets: list[dict[str, Any]], dropped: int | None) -> list[str]:
    if dropped is None:
        return ["## Decontamination", "", "Off (`data.decontam.enabled: false`).", ""]
    out = ["## Decontamination", "", f"{dropped} training rows dropped for sharing a word sequence with an "
           "evaluation prompt: the eval split's, and every benchmark below (the files eval.suites asks, and "
           "data.decontam.targets).", ""]
    if targets:
        out += [_table(["setting", "file", "prompts"], [[t["key"], Path(t["path"]).name, t["prompts"]] for t in targets]), ""]
    return out


def _pii_section(pii: dict[str, Any]) -> list[str]:
    out = ["## PII and demographic audit", ""]
    out += [f"{pii['flagged_rows']} rows contain personal data or secrets (action: {pii['action']})."]
    if pii["totals"]:
        out += ["", _table(["kind", "findings"], [[k, v] for k, v in pii["totals"].items()])]
    if pii["flagged"]:
        out += ["", _table(["row", "kinds"], [[f["where"], ", ".join(f["kinds"])] for f in pii["flagged"][:50]])]
        if len(pii["flagged"]) > 50:
            out += ["", f"... and {len(pii['flagged']) - 50} more (stats.json lists them all)."]
    rows = []
    for axis, report in pii["demographics"].items():
        counts = ", ".join(f"{g} {n}" for g, n in report["counts"].items())
        tv = "n/a" if report["tv_from_uniform"] is None else f"{report['tv_from_uniform']:.2f}"
        rows.append([axis, counts, tv, report["warning"] or ""])
    if rows:
        out += ["", "Demographic terms (whole words); total variation from a uniform mix, 0 = balanced:", ""]
        out += [_table(["axis", "mentions", "TV", "warning"], rows)]
    return out + [""]
