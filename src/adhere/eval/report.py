"""report.html: the evaluation results and samples as one self-contained page for people.

`adhere eval adhere.yaml` writes it beside results.json and samples.jsonl; to
render it again from those two files:

    python -m adhere.eval.report runs/<project>/eval

The page loads nothing from anywhere: CSS, SVG charts and the filter script are
inline, and a Content-Security-Policy forbids any other resource and any script
but ours (pinned by its hash). Tables and charts work without JavaScript; the
script only filters the samples (also by URL: `report.html#filter=regressed&suite=ifeval`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections import Counter
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from markupsafe import Markup

from adhere import runs
from adhere.errors import UserError
from adhere.eval import report_charts as charts

TEMPLATES = Path(__file__).parent / "templates"
KINDS = ("rate", "score", "mean")
ALPHA = 0.05  # a delta is coloured better/worse only when p < 0.05 (or, without a p-value, its 95% CI excludes 0)
MAX_CARDS_PER_SUITE = 1000  # IFEval's 541 prompts fit; beyond, a 2-model page passes ~10 MB and scrolling stutters
MAX_RESPONSE_CHARS = 20_000  # a 4,096-token response is ~16,000 characters; longer ones are cut, with a note
COLLAPSE_CHARS, COLLAPSE_LINES = 700, 14  # longer responses start folded to about 14 lines


def write_report(results: dict[str, Any], samples: list[dict[str, Any]], out: Path) -> Path:
    """Write `out` (report.html) from results.json's content and samples.jsonl's lines; return its path."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    check_results(results)
    check_samples(samples)
    script = (TEMPLATES / "report.js").read_text(encoding="utf-8")
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    env.trim_blocks = env.lstrip_blocks = True
    page = page_view(results, samples)
    script_hash = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    html = env.get_template("report.html.j2").render(page=page, script=Markup(script), script_hash=script_hash)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return runs.write_text_atomic(out, html)


def write_report_from_dir(eval_dir: Path, out: Path | None = None) -> Path:
    """Read `eval_dir`/results.json and samples.jsonl and write report.html there (or to `out`)."""
    eval_dir = Path(eval_dir)
    path = eval_dir / "results.json"
    if not path.is_file():
        raise UserError(f"{path}: not found; run `adhere eval adhere.yaml` first, or pass the folder it wrote")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); run `adhere eval` again") from None
    samples = []
    sample_path = eval_dir / "samples.jsonl"
    lines = sample_path.read_text(encoding="utf-8").splitlines() if sample_path.is_file() else []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            samples.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{sample_path}:{number}: not valid JSON ({exc.msg}); run `adhere eval` again") from None
    return write_report(results, samples, out or eval_dir / "report.html")


# --- Input checks: a malformed file is named with the key that is wrong -------------------------------


def _need(obj: Any, key: str, path: str, kind: type | tuple[type, ...]) -> Any:
    """obj[key], checked to be of `kind`; UserError naming the key path (suites.held_out.metrics.rouge_l.kind)."""
    where = f"{path}.{key}" if path else key
    if not isinstance(obj, dict):
        raise UserError(f"results.json: {path or 'the top level'} should be an object, not {_json_type(type(obj))}")
    if key not in obj:
        raise UserError(f"results.json: {where} is missing; the eval stage writes it: run `adhere eval adhere.yaml`")
    if not isinstance(obj[key], kind):
        names = "/".join(dict.fromkeys(_json_type(t) for t in (kind if isinstance(kind, tuple) else (kind,))))
        raise UserError(f"results.json: {where} should be {names}, not {_json_type(type(obj[key]))}")
    return obj[key]


def _json_type(kind: type) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
            type(None): "null", bool: "true/false"}.get(kind, kind.__name__)


def check_results(results: dict[str, Any]) -> None:
    """Raise UserError naming the key when results.json lacks what the report needs."""
    models = _need(results, "models", "", dict)
    baseline = results.get("baseline")
    if baseline is not None and baseline not in models:
        raise UserError(f"results.json: baseline {baseline!r} is not one of models ({', '.join(models)})")
    for key, suite in _need(results, "suites", "", dict).items():
        path = f"suites.{key}"
        _need({key: suite}, key, "suites", dict)
        for name, metric in (_need(suite, "metrics", path, dict) if "metrics" in suite else {}).items():
            where = f"{path}.metrics.{name}"
            kind = _need(metric, "kind", where, str)
            if kind not in KINDS:
                raise UserError(f"results.json: {where}.kind is {kind!r}; expected one of {', '.join(KINDS)}")
            for model, cell in _need(metric, "models", where, dict).items():
                _need(cell, "value", f"{where}.models.{model}", (int, float, type(None)))
                ci = cell.get("ci")
                if ci is not None and (not isinstance(ci, list) or len(ci) != 2):
                    raise UserError(f"results.json: {where}.models.{model}.ci should be [low, high] or null")


def check_samples(samples: list[dict[str, Any]]) -> None:
    """Raise UserError naming the line of samples.jsonl that lacks suite, id or model."""
    for number, sample in enumerate(samples, 1):
        missing = [k for k in ("suite", "id", "model") if not isinstance(sample, dict) or k not in sample]
        if missing:
            raise UserError(f"samples.jsonl:{number}: missing {', '.join(missing)}; a line is one (suite, id, model)")


# --- Formatting: one place decides how each kind of number reads -------------------------------------


def fmt_value(kind: str, value: float | None) -> str:
    """0.89 as '89.0%' for a rate, '0.890' for a score, '0.89' for a mean; None as an em dash."""
    if value is None:
        return "—"
    if kind == "rate":
        return f"{value * 100:.1f}%"
    return f"{value:.3f}" if kind == "score" else f"{value:.2f}"


def fmt_delta(kind: str, delta: float | None) -> str:
    """A difference: percentage points for a rate ('+68.0 pp'), else signed like the value."""
    if delta is None:
        return "—"
    if kind == "rate":
        return f"{delta * 100:+.1f} pp"
    return f"{delta:+.3f}" if kind == "score" else f"{delta:+.2f}"


def fmt_ci(kind: str, ci: list[float] | None, signed: bool = False) -> str:
    """A 95% CI as '80.0–96.0' (in % for a rate); empty when there is none (n < 2)."""
    if not ci:
        return ""
    low, high = (x * 100 if kind == "rate" else x for x in ci)
    digits = 1 if kind == "rate" else 3 if kind == "score" else 2
    sign = "+" if signed else ""
    return f"{low:{sign}.{digits}f} to {high:{sign}.{digits}f}" if signed else f"{low:.{digits}f}–{high:.{digits}f}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def verdict(comparison: dict[str, Any]) -> str:
    """'better', 'worse' or 'ns': significant at 0.05 by p-value, or by the CI when p is absent."""
    delta, p, ci = comparison.get("delta"), comparison.get("p_value"), comparison.get("ci")
    if delta is None or delta == 0:
        return "ns"
    significant = p < ALPHA if p is not None else bool(ci) and (ci[0] > 0 or ci[1] < 0)
    return ("better" if delta > 0 else "worse") if significant else "ns"


def fmt_date(created: str | None) -> str:
    """'2026-11-26T01:02:03+00:00' as '26 Nov 2026, 01:02 UTC' (the text as given when it is not ISO 8601)."""
    if not created:
        return "date unknown"
    try:
        when = datetime.fromisoformat(created)
    except ValueError:
        return created
    zone = "UTC" if when.utcoffset() is not None and when.utcoffset().total_seconds() == 0 else when.strftime("%z")
    return f"{when.day} {when:%b %Y, %H:%M} {zone}".strip()


# --- The page as plain data for the template -----------------------------------------------------------


def comparisons(metric: dict[str, Any]) -> list[dict[str, Any]]:
    """A metric's comparisons as a list: one dict (two models) or a list of them (one per model vs baseline)."""
    found = metric.get("comparisons") or metric.get("comparison")  # "comparisons" holds all when there are several
    if not found:
        return []
    return [found] if isinstance(found, dict) else [c for c in found if isinstance(c, dict)]


def summary_rows(suite: dict[str, Any], models: list[str], pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """One row per metric: each model's value and CI, then delta, CI, p and test per compared pair."""
    rows = []
    for key, metric in suite.get("metrics", {}).items():
        kind = metric["kind"]
        cells = []
        for model in models:
            cell = metric["models"].get(model) or {}
            value = cell.get("value")
            cells.append({"model": model, "text": fmt_value(kind, value), "raw": value,
                          "ci": fmt_ci(kind, cell.get("ci")), "n": cell.get("n")})
        by_pair = {(c.get("model"), c.get("baseline")): c for c in comparisons(metric)}
        deltas = []
        for pair in pairs:
            c = by_pair.get(pair)
            deltas.append(None if c is None else {
                "text": fmt_delta(kind, c.get("delta")), "raw": c.get("delta"),
                "ci": fmt_ci(kind, c.get("ci"), signed=True), "p": fmt_p(c.get("p_value")), "p_raw": c.get("p_value"),
                "test": c.get("test") or "", "verdict": verdict(c),
            })
        rows.append({"key": key, "label": metric.get("label") or key, "kind": kind, "cells": cells, "deltas": deltas})
    return rows


def suite_view(key: str, suite: dict[str, Any], order: list[str], colours: dict[str, str],
               limit: int | None) -> dict[str, Any]:
    """Everything the template shows for one suite: counts, summary table, charts."""
    metrics = suite.get("metrics", {})
    present = {m for metric in metrics.values() for m in metric["models"]}
    models = [m for m in order if m in present] + sorted(present - set(order))
    pairs = list(dict.fromkeys((c.get("model"), c.get("baseline")) for m in metrics.values() for c in comparisons(m)))
    counts = suite.get("counts") or {}
    skipped = counts.get("skipped") or {}
    breakdown = suite.get("breakdown") or {}
    rows = breakdown.get("rows") or {}
    bd_models = [m for m in order if any(m in r for r in rows.values())]
    bd_title = breakdown.get("title") or "Breakdown"
    responses = suite.get("responses") or {}
    len_models = [m for m in order if m in responses] + sorted(set(responses) - set(order))
    pairwise = suite.get("all_pairwise") or ([suite["pairwise"]] if suite.get("pairwise") else [])
    unreadable = {m: n for m, n in (suite.get("unparseable_scores") or {}).items() if n}
    return {
        "key": key, "title": suite.get("title") or key, "models": models, "pairs": pairs,
        "prompts": counts.get("prompts"), "scored": counts.get("scored"),
        "skipped": sorted(skipped.items(), key=lambda kv: -kv[1]), "skipped_total": sum(skipped.values()),
        "rows": summary_rows(suite, models, pairs),
        "breakdown": {"title": bd_title, "models": bd_models,
                      "svg": charts.breakdown_chart(rows, bd_models, colours, bd_title)} if rows else None,
        "lengths": {"models": len_models, "svg": charts.length_histogram(responses, len_models, colours, limit),
                    "stats": [dict(responses[m], model=m, n=len(responses[m].get("lengths") or []))
                              for m in len_models]} if responses else None,
        "pairwise": [dict(p, svg=charts.pairwise_bar(p), parts=charts.pairwise_parts(p))
                     for p in pairwise if isinstance(p, dict)],
        "pairwise_colours": charts.PAIRWISE_COLOURS, "unparseable_scores": sorted(unreadable.items()),
    }


def glance(suites: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first metric of each suite with its first comparison: the headline numbers at the top."""
    tiles = []
    for s in suites:
        if s["rows"]:
            row = s["rows"][0]
            delta = row["deltas"][0] if row["deltas"] else None
            tiles.append({"suite": s["key"], "title": s["title"], "label": row["label"], "cells": row["cells"],
                          "delta": delta, "pair": s["pairs"][0] if s["pairs"] else None})
    return tiles


def page_view(results: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole page as plain data: header, suites, sample cards, footer."""
    baseline = results.get("baseline")
    order = list(results["models"])
    order += sorted({s["model"] for s in samples} - set(order))
    colours = charts.model_colours(order, baseline)
    decoding = results.get("decoding") or {}
    suites = [suite_view(k, s, order, colours, decoding.get("max_new_tokens")) for k, s in results["suites"].items()]
    sections = sample_sections(samples, results, order)
    try:
        version = metadata.version("adhere")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "project": results.get("project") or "adhere project", "created": fmt_date(results.get("created")),
        "created_iso": results.get("created") or "", "baseline": baseline,
        "models": [dict(results["models"].get(m) or {}, name=m, colour=colours[m], baseline=m == baseline)
                   for m in order],
        "decoding": list(decoding.items()), "suites": suites, "glance": glance(suites), "samples": sections,
        "sample_totals": Counter(t for s in sections for c in s["cards"] for t in c["tags"] | {"all"}),
        "version": version,
    }


# --- Samples: one card per (suite, prompt), each model's response side by side --------------------------


def text_block(text: str | None, ids: Counter) -> dict[str, Any] | None:
    """A prompt, reference or response for the page: cut past MAX_RESPONSE_CHARS, folded when long."""
    if text is None:
        return None
    text = str(text)
    ids["block"] += 1
    long = len(text) > COLLAPSE_CHARS or text.count("\n") >= COLLAPSE_LINES
    return {"text": text[:MAX_RESPONSE_CHARS], "cut": max(0, len(text) - MAX_RESPONSE_CHARS), "long": long,
            "chars": len(text), "id": f"t{ids['block']}"}


def listed_ids(suite: dict[str, Any]) -> dict[str, dict[str, dict[str, list[str]]]]:
    """{"regressed": {prompt id: {"tuned vs base": ["ROUGE-L F1", ...]}}, "improved": {...}} from the comparisons."""
    listed: dict[str, dict[str, dict[str, list[str]]]] = {"regressed": {}, "improved": {}}
    for key, metric in (suite.get("metrics") or {}).items():
        for c in comparisons(metric):
            pair = f"{c.get('model')} vs {c.get('baseline')}"
            for tag, by_id in listed.items():
                for pid in c.get(tag) or []:
                    by_id.setdefault(str(pid), {}).setdefault(pair, []).append(metric.get("label") or key)
    return listed


def _score_text(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def pairwise_outcome(pairwise: Any, baseline: str | None) -> dict[str, Any] | None:
    """A sample's {"outcome": 1.0, "verdicts": [...]} as {"text": "wins vs base", "cls": "pass", "verdicts": [...]}."""
    if not isinstance(pairwise, dict):
        return None
    text, cls = {1.0: ("wins", "pass"), 0.0: ("loses", "fail"), 0.5: ("ties", "na")}.get(
        pairwise.get("outcome"), ("unparseable verdict", "na"))
    return {"text": f"{text} vs {baseline}" if baseline else text, "cls": cls,
            "verdicts": [str(v) for v in pairwise.get("verdicts") or []]}


def sample_card(suite: str, pid: str, lines: dict[str, dict], order: list[str], baseline: str | None,
                listed: dict[str, dict[str, list[str]]], ids: Counter) -> dict[str, Any]:
    """One prompt with every model's response, its checks marked against the baseline's, and its tags."""
    models = [m for m in order if m in lines]
    first = lines[models[0]]
    base_checks = (lines.get(baseline) or {}).get("checks") or {}
    tags, reasons, responses = set(), [], []
    for m in models:
        s = lines[m]
        checks, changed = [], {"regressed": [], "improved": []}
        for name, ok in (s.get("checks") or {}).items():
            was = base_checks.get(name)
            change = None
            if m != baseline and ok is not None and was is not None and bool(ok) != bool(was):
                change = "improved" if ok else "regressed"
                changed[change].append(name)
            checks.append({"name": name, "ok": ok, "change": change})
        for tag, names in changed.items():
            if names:
                tags.add(tag)
                verb = ("fails", "passes") if tag == "regressed" else ("passes", "fails")
                reasons.append((tag, f"{m} {verb[0]} {', '.join(names)}, which {baseline} {verb[1]}"))
        responses.append({
            "model": m, "block": text_block(s.get("response") or "", ids), "finish": s.get("finish_reason"),
            "error": s.get("error"), "tokens": s.get("tokens"), "checks": checks,
            "scores": [(k, _score_text(v)) for k, v in (s.get("scores") or {}).items()],
            "judge_reason": s.get("judge_reason"), "pairwise": pairwise_outcome(s.get("pairwise"), baseline),
        })
    for tag in ("regressed", "improved"):
        for pair, labels in listed[tag].get(pid, {}).items():
            tags.add(tag)
            reasons.append((tag, f"{pair}: listed as {tag} in {', '.join(labels)}"))
    reasons_given = {r["judge_reason"] for r in responses if r["judge_reason"]}
    shared = reasons_given.pop() if len(reasons_given) == 1 and len(responses) > 1 else None
    for r in responses if shared else []:
        r["judge_reason"] = None  # one pairwise verdict written on each model's line: show it once
    return {"suite": suite, "id": pid, "prompt": text_block(first.get("prompt") or "", ids), "judge_reason": shared,
            "system": text_block(first.get("system"), ids), "reference": text_block(first.get("reference"), ids),
            "responses": responses, "tags": tags, "reasons": reasons}


def cap_cards(cards: list[dict[str, Any]], limit: int = MAX_CARDS_PER_SUITE) -> list[dict[str, Any]]:
    """At most `limit` cards: every regression and improvement first, then the others in file order."""
    if len(cards) <= limit:
        return cards
    tagged = [i for i, c in enumerate(cards) if c["tags"]]
    rest = [i for i, c in enumerate(cards) if not c["tags"]]
    keep = sorted((tagged + rest)[:limit])
    return [cards[i] for i in keep]


def sample_sections(samples: list[dict[str, Any]], results: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    """Cards grouped by suite, in the order of results.json (suites found only in samples.jsonl last)."""
    grouped: dict[str, dict[str, dict[str, dict]]] = {}
    for s in samples:
        grouped.setdefault(str(s["suite"]), {}).setdefault(str(s["id"]), {})[str(s["model"])] = s
    suites = results["suites"]
    keys = [k for k in suites if k in grouped] + [k for k in grouped if k not in suites]
    sections, ids = [], Counter()
    for key in keys:
        suite = suites.get(key) or {}
        listed = listed_ids(suite)
        cards = [sample_card(key, pid, lines, order, results.get("baseline"), listed, ids)
                 for pid, lines in grouped[key].items()]
        kept = cap_cards(cards)
        sections.append({"key": key, "title": suite.get("title") or key, "cards": kept, "total": len(cards),
                         "left_out": len(cards) - len(kept)})
    return sections


def main(argv: list[str] | None = None) -> int:
    """`python -m adhere.eval.report EVAL_DIR [OUT]`: render report.html again from results.json and samples.jsonl."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m adhere.eval.report EVAL_DIR [OUT.html]", file=sys.stderr)
        return 2
    try:
        path = write_report_from_dir(Path(args[0]), Path(args[1]) if len(args) == 2 else None)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
