"""How long adhere takes to score the IFEval suite: 541 responses, strict and loose.

    .venv/bin/python bench/ifeval_score_bench.py            # about 10 s; writes its block in docs/benchmarks.md
    .venv/bin/python bench/ifeval_score_bench.py --no-docs

Scores GPT-4's 541 responses in tests/data/ifeval_reference/ (the golden set of the IFEval tests,
from ../shared/ifeval/reference_gpt4/) with `adhere.eval.ifeval.suite.score`, three times, and reports the median wall time, the
first call's time (which includes loading Punkt's parameters and the language detector), and the
agreement with the reference implementation's verdicts. The reference implementation itself is not
timed beside it: it needs nltk's punkt data, which it downloads at run time and this machine cannot.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from docs_block import cpu_name, write_block  # noqa: E402

GOLDEN = ROOT / "tests" / "data" / "ifeval_reference"  # a copy of ../shared/ifeval/reference_gpt4/
HEADING = "## IFEval scoring speed (bench/ifeval_score_bench.py)"
BEGIN = "<!-- ifeval_score_bench.py writes from here -->"
END = "<!-- ifeval_score_bench.py writes to here -->"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--golden", type=Path, default=GOLDEN, help="folder with responses.jsonl and verdicts_*.jsonl")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    if not (args.golden / "responses.jsonl").is_file():
        sys.exit(f"{args.golden / 'responses.jsonl'}: not found; pass --golden FOLDER with the reference set")

    started = time.perf_counter()
    from adhere.eval.ifeval.suite import load_suite, score

    import_s = time.perf_counter() - started
    answers = {row["prompt"]: row["response"] for row in read_jsonl(args.golden / "responses.jsonl")}
    prompts = [p for p in load_suite() if p.prompt in answers]
    responses = [answers[p.prompt] for p in prompts]
    times = []
    for _ in range(3):
        started = time.perf_counter()
        verdicts = score(prompts, responses)
        times.append(time.perf_counter() - started)
    agreement = {}
    for mode in ("strict", "loose"):
        reference = {r["prompt"]: r["follow_instruction_list"] for r in read_jsonl(args.golden / f"verdicts_{mode}.jsonl")}
        pairs = [(a, b) for v in verdicts if v.prompt in reference  # one prompt has no reference verdict
                 for a, b in zip(v.followed(mode), reference[v.prompt])]
        agreement[mode] = (sum(a == b for a, b in pairs), len(pairs))
    instructions = sum(len(p.instruction_id_list) for p in prompts)
    lines = [
        f"`.venv/bin/python bench/ifeval_score_bench.py`: {cpu_name()}, one process.",
        "",
        "| | value |",
        "|---|---|",
        f"| responses scored (GPT-4's, the golden set) | {len(prompts)} ({instructions} instructions), strict and loose |",
        f"| first call (loads Punkt's parameters and the language detector) | {times[0]:.2f} s |",
        f"| median of 3 calls | {statistics.median(times):.2f} s ({len(prompts) / statistics.median(times):,.0f} responses/s) |",
        f"| importing the scorer | {import_s:.2f} s |",
        f"| agreement with the reference implementation, per instruction | strict {agreement['strict'][0]}/{agreement['strict'][1]}, "
        f"loose {agreement['loose'][0]}/{agreement['loose'][1]} |",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_docs:
        write_block(HEADING, BEGIN, END, text)


if __name__ == "__main__":
    main()
