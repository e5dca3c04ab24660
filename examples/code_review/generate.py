"""Generate the code-review example's data: Python snippets with planted findings and JSON reviews.

    python examples/code_review/generate.py --seed 0 --out examples/code_review/data/

Writes train.jsonl (200 examples) and eval.jsonl (50) in adhere's canonical chat format, the
same bytes for the same seed. Train and eval snippets come from disjoint templates
(templates_train.py, templates_eval.py). Every reference is derived from what was planted and
then cross-checked with ruff (a dev tool, needed here only): a snippet is kept only when ruff,
run with the checklist's rule codes, reports exactly the planted (line, rule) pairs. Snippets
that would be near-duplicates or that share a 13-word sequence with an eval prompt are drawn
again, with the same thresholds `adhere data` applies, so curation keeps every row.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import checklist
import templates_eval
import templates_train
from snippets import Template, code, plant

INSTRUCTIONS = (
    "Review this Python code for style and best practices.",
    "Please review the following Python snippet.",
    "Check this code against the style checklist.",
    "Can you review this code for quality issues?",
    "Do a quick code review of this Python file.",
    "Look over this code and point out style problems.",
    "Review the Python below and list any issues.",
    "What would you flag in a code review of this snippet?",
    "Find style and best-practice problems in this code.",
    "Give me a code review of this module.",
    "Lint this Python code by hand and report the findings.",
    "Audit this snippet for common Python mistakes.",
    "Spot the code smells in this Python code.",
    "Review my code, please.",
    "I'm about to merge this. Anything to fix?",
    "Here is a module from our repo. Review it.",
    "Point out what breaks our Python style rules here.",
    "Check the following code for issues a linter would catch.",
    "Review this code for readability and correctness.",
    "Is this Python code clean? Review it.",
)
LIMITS = (
    "List at most {n} {noun}.",
    "No more than {n} {noun}, please.",
    "Keep it to {n} {noun} at most.",
    "Give only the first {n} {noun}.",
)
IGNORES = {
    "missing-docstring": ("Ignore missing docstrings.", "Docstrings are not required in this project.",
                          "Don't flag missing docstrings."),
    "print-call": ("Prints are intended here; don't flag them.", "Ignore print calls, this is a script.",
                   "Skip print calls."),
}
LIMIT_SHARE = 0.25  # of prompts that cap the number of suggestions
IGNORE_SHARE = 0.3  # of prompts whose snippet has an ignorable finding, that ask to ignore it
NEAR_DUPLICATE = 0.7  # Jaccard of word 5-grams; `adhere data` drops at 0.8, so 0.1 of margin
MIN_LINES, MAX_LINES = 10, 40
BATCH = 64  # candidates linted per ruff call (one process start, ~0.1 s, per batch)
NUMBERED = re.compile(r"^ *(\d+)\|(?: (.*))?$")


@dataclass
class Candidate:
    """One drawn snippet with its prompt and reference, before the checks."""

    template: Template
    text: str
    findings: list[tuple[int, str]]
    prompt: str
    reference: dict[str, Any]
    limit: int | None
    ignored: list[str]


def numbered(text: str) -> str:
    """The snippet as the prompt shows it: `' 7| line'`, so line numbers can be read, not counted."""
    return "\n".join(f"{n:>2}| {line}".rstrip() for n, line in enumerate(text.splitlines(), start=1))


def snippet_from_prompt(prompt: str) -> str:
    """The snippet inside a prompt, without its line numbers (the inverse of `numbered`)."""
    block = prompt.split("```python\n", 1)[1].split("\n```", 1)[0]
    return "\n".join((NUMBERED.match(line).group(2) or "") for line in block.splitlines())


def draw(template: Template, rng: random.Random, weights: dict[str, float]) -> Candidate:
    """Plant findings in one rendering of `template`; word the request; derive the reference."""
    lines = plant(template, rng, weights)
    findings = [(n, line.rule) for n, line in enumerate(lines, start=1) if line.rule]
    planted = [rule for _, rule in findings]
    ignorable = [r for r in IGNORES if r in planted]
    ignored = [rng.choice(ignorable)] if ignorable and rng.random() < IGNORE_SHARE else []
    limit = rng.choice((1, 2, 3)) if rng.random() < LIMIT_SHARE else None
    asks = [rng.choice(INSTRUCTIONS)] + [rng.choice(IGNORES[r]) for r in ignored]
    if limit:
        asks.append(rng.choice(LIMITS).format(n=limit, noun="suggestion" if limit == 1 else "suggestions"))
    request, block = " ".join(asks), f"```python\n{numbered(code(lines))}\n```"
    prompt = f"{block}\n\n{request}" if rng.random() < 0.25 else f"{request}\n\n{block}"
    return Candidate(template, code(lines), findings, prompt, reference(lines, findings, limit, ignored), limit, ignored)


def reference(lines: list, findings: list[tuple[int, str]], limit: int | None, ignored: list[str]) -> dict[str, Any]:
    """The ideal review: findings in line order, minus ignored rules, the first `limit` of them."""
    kept = [(n, rule) for n, rule in findings if rule not in ignored]
    shown = kept[:limit] if limit else kept
    suggestions = [{"line": n, "rule": rule, "message": checklist.message(rule, lines[n - 1].text)} for n, rule in shown]
    return {"summary": checklist.summary([rule for _, rule in shown], len(kept)), "suggestions": suggestions}


def ruff_command() -> list[str]:
    """How to run ruff, or a clear error: it is needed to generate, not to use the data."""
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    if shutil.which("ruff"):
        return ["ruff"]
    sys.exit("generate.py cross-checks every reference with ruff: install it with `pip install ruff`")


def lint(texts: list[str]) -> list[set[tuple[int, str]]]:
    """The checklist findings ruff reports in each text, as (line, rule id) pairs."""
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(texts):
            (Path(tmp) / f"s{i}.py").write_text(text + "\n")
        select = ",".join(sorted(checklist.RUFF_CODES))
        args = ["check", "--isolated", "--no-cache", "--select", select, "--output-format", "json", tmp]
        done = subprocess.run(ruff_command() + args, capture_output=True, text=True, check=False)
        if done.returncode not in (0, 1):
            sys.exit(f"ruff failed (exit {done.returncode}): {done.stderr.strip()}")
        found: list[set[tuple[int, str]]] = [set() for _ in texts]
        for item in json.loads(done.stdout or "[]"):
            index = int(Path(item["filename"]).stem[1:])
            rule = checklist.RUFF_CODES.get(item.get("code") or "", f"other:{item.get('code')}")
            found[index].add((item["location"]["row"], rule))
    return found


def _problem(candidate: Candidate) -> str | None:
    """Why a candidate cannot be used before linting, or None."""
    count = len(candidate.text.splitlines())
    if not MIN_LINES <= count <= MAX_LINES:
        return f"{count}_lines"
    try:
        ast.parse(candidate.text)
    except SyntaxError:
        return "syntax_error"
    return None


def build_split(templates: tuple[Template, ...], n: int, rng: random.Random, split: str, *,
                check_lint: bool = True, contamination: Any = None) -> tuple[list[dict[str, Any]], Counter]:
    """`n` records from `templates`, every one checked; returns them and the counts of redraws by reason."""
    from adhere.data.curate import shingles

    records: list[dict[str, Any]] = []
    seen_shingles: list[set[bytes]] = []
    redrawn: Counter[str] = Counter()
    planted: Counter[str] = Counter()
    drawn = 0
    while len(records) < n:
        # Rules with few sites would end up rare; weighting by 1/(1+count)^2 evens the counts out.
        weights = {r: 1.0 / (1 + planted[r]) ** 2 for r in checklist.RULE_IDS}
        batch = []
        for _ in range(BATCH):
            batch.append(draw(templates[drawn % len(templates)], rng, weights))
            # Counted when drawn, not when kept, so the weights move within a batch too.
            planted.update(rule for _, rule in batch[-1].findings)
            weights = {r: 1.0 / (1 + planted[r]) ** 2 for r in checklist.RULE_IDS}
            drawn += 1
        verdicts = lint([c.text for c in batch]) if check_lint else [set(c.findings) for c in batch]
        for candidate, seen in zip(batch, verdicts):
            text = " ".join(re.findall(r"\w+", f"{candidate.prompt}\n{json.dumps(candidate.reference)}".casefold()))
            grams = shingles(text, 5)
            problem = _problem(candidate)
            if problem is None and seen != set(candidate.findings):
                problem = "ruff_disagrees"
            if problem is None and any(len(grams & s) / len(grams | s) >= NEAR_DUPLICATE for s in seen_shingles):
                problem = "near_duplicate"
            if problem is None and contamination is not None and contamination.match(candidate.prompt):
                problem = "shares_13_words_with_eval"
            if problem:
                redrawn[problem] += 1
                continue
            if len(records) < n:
                seen_shingles.append(grams)
                records.append(to_record(candidate, split, len(records)))
    return records, redrawn


def to_record(candidate: Candidate, split: str, index: int) -> dict[str, Any]:
    """The canonical chat record: the user's request and the reference review as JSON."""
    meta = {
        "id": f"{split}-{index:03d}", "template": candidate.template.id, "kind": candidate.template.kind,
        "planted": [{"line": n, "rule": r} for n, r in candidate.findings],
        "limit": candidate.limit, "ignored": candidate.ignored,
    }
    answer = json.dumps(candidate.reference, ensure_ascii=False)
    return {"messages": [{"role": "user", "content": candidate.prompt}, {"role": "assistant", "content": answer}],
            "meta": meta}


def build(seed: int = 0, n_train: int = 200, n_eval: int = 50, *, check_lint: bool = True) -> dict[str, Any]:
    """Both splits for `seed`: {'train': records, 'eval': records, 'redrawn': {split: Counter}}."""
    from adhere.data.config import DecontamConfig
    from adhere.data.decontam import EvalIndex

    rng = random.Random(seed)
    evals, eval_redrawn = build_split(templates_eval.TEMPLATES, n_eval, rng, "eval", check_lint=check_lint)
    index = EvalIndex(DecontamConfig().ngram)
    for record in evals:
        index.add(record["messages"][0]["content"], record["meta"]["id"])
    train, train_redrawn = build_split(templates_train.TEMPLATES, n_train, rng, "train", check_lint=check_lint,
                                       contamination=index)
    return {"train": train, "eval": evals, "redrawn": {"train": train_redrawn, "eval": eval_redrawn}}


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """One JSON record per line, UTF-8, '\\n' line ends (the same bytes on every platform)."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def describe(result: dict[str, Any]) -> str:
    """Counts per split: examples, findings per rule, templates, redraws."""
    out = []
    for split in ("train", "eval"):
        records = result[split]
        rules = Counter(s["rule"] for r in records for s in r["meta"]["planted"])
        sizes = Counter(len(r["meta"]["planted"]) for r in records)
        answers = [len(r["messages"][1]["content"]) for r in records]
        out.append(f"{split}: {len(records)} examples from {len({r['meta']['template'] for r in records})} templates; "
                   f"findings per snippet {dict(sorted(sizes.items()))}; answer chars max {max(answers)}")
        out.append("  planted: " + ", ".join(f"{rule} {rules[rule]}" for rule in checklist.RULE_IDS))
        out.append(f"  redrawn: {dict(result['redrawn'][split]) or 'none'}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, build both splits, write them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--train", type=int, default=200, help="training examples")
    parser.add_argument("--eval", type=int, default=50, help="held-out evaluation examples")
    args = parser.parse_args(argv)
    result = build(args.seed, args.train, args.eval)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", result["train"])
    write_jsonl(args.out / "eval.jsonl", result["eval"])
    sys.stdout.write(describe(result) + f"\nwrote {args.out / 'train.jsonl'} and {args.out / 'eval.jsonl'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
