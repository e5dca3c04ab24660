"""Benchmark of the data stage: 100,000 rows with planted exact and near duplicates.

    .venv/bin/python bench/data_bench.py            # 100,000 rows
    .venv/bin/python bench/data_bench.py --rows 20000

Runs `adhere data` (everything but the optional semantic step) on generated
Alpaca rows and reports rows per second, peak memory, and how many planted
near-duplicates were found (recall) and how many unique rows were wrongly
dropped as duplicates (false positives). Side by side, in the same run, the
peers' approach (exact dedup on normalised text, as Axolotl and most
training scripts do) on the same rows.

Planted near-duplicates copy a row and change it a little: one word replaced,
or one to three words appended. Each is checked to have a true Jaccard
similarity of its word 5-gram shingles >= 0.8 with its original, the
threshold adhere uses, so recall measures the MinHash LSH, not the definition.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from adhere.config import load_config  # noqa: E402
from adhere.data import run  # noqa: E402
from adhere.data.curate import shingles  # noqa: E402

VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "tu", "ve", "zo") for b in range(300)]
THRESHOLD = 0.8


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a, 5), shingles(b, 5)
    return len(sa & sb) / len(sa | sb)


def generate(rows: int, exact: int, near: int, seed: int) -> tuple[list[dict], set[int], set[int]]:
    """Unique rows, then planted copies; returns rows and the line numbers (1-based) of planted exact/near copies."""
    rng = random.Random(seed)
    unique = rows - exact - near
    data = []
    for i in range(unique):
        instruction = f"Task {i}: " + " ".join(rng.choices(VOCAB, k=14))
        output = " ".join(rng.choices(VOCAB, k=40))
        data.append({"instruction": instruction, "input": "", "output": output})
    planted_exact, planted_near = set(), set()
    for _ in range(exact):
        row = dict(rng.choice(data[:unique]))
        row["instruction"] = "  " + row["instruction"].upper() + " "
        data.append(row)
        planted_exact.add(len(data))
    while len(planted_near) < near:
        original = rng.choice(data[:unique])
        words = original["output"].split()
        if rng.random() < 0.5:
            words[rng.randrange(len(words))] = rng.choice(VOCAB)
        else:
            words += rng.choices(VOCAB, k=rng.randint(1, 3))
        row = dict(original, output=" ".join(words))
        key = lambda r: f"{r['instruction']}\n{r['output']}"  # noqa: E731
        if jaccard(key(row), key(original)) >= THRESHOLD:
            data.append(row)
            planted_near.add(len(data))
    return data, planted_exact, planted_near


def exact_only(rows: list[dict]) -> int:
    """The peers' dedup: drop rows whose whitespace- and case-normalised text was seen."""
    seen, dropped = set(), 0
    for row in rows:
        key = " ".join(f"{row['instruction']} {row['input']} {row['output']}".lower().split())
        dropped += key in seen
        seen.add(key)
    return dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    exact, near = args.rows // 50, args.rows // 50  # 2% each
    rows, planted_exact, planted_near = generate(args.rows, exact, near, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with (folder / "rows.jsonl").open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        (folder / "adhere.yaml").write_text("name: bench\ndata:\n  sources: [{path: rows.jsonl}]\n  eval_fraction: 0.01\n")
        config = load_config(folder / "adhere.yaml")
        start = time.perf_counter()
        run_dir = run(config)
        seconds = time.perf_counter() - start
        rejected = [json.loads(line) for line in (run_dir / "rejected.jsonl").open()]
        stats = json.loads((run_dir / "stats.json").read_text())

    peer_start = time.perf_counter()
    peer_dropped = exact_only(rows)
    peer_seconds = time.perf_counter() - peer_start
    dup_lines = {int(r["location"].split()[1]) for r in rejected if r["rule"] in ("exact_duplicate", "near_duplicate")}
    found_near = len(dup_lines & planted_near)
    false_pos = len(dup_lines - planted_near - planted_exact)
    unique = args.rows - len(planted_exact) - len(planted_near)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"rows: {args.rows} ({len(planted_exact)} planted exact, {len(planted_near)} planted near duplicates)")
    print(f"adhere data: {seconds:.1f} s, {args.rows / seconds:,.0f} rows/s, peak memory {peak_gib:.2f} GiB (whole process)")
    print(f"  exact duplicates found: {len(dup_lines & planted_exact)}/{len(planted_exact)}")
    print(f"  near duplicates found: {found_near}/{len(planted_near)} = {found_near / len(planted_near):.1%} recall")
    print(f"  unique rows dropped as duplicates: {false_pos}/{unique} = {false_pos / unique:.2%} false positives")
    print(f"  kept {stats['kept']}, rejected {stats['rejected']}: {stats['rejected_by_rule']}")
    print(f"peer (exact dedup only): {peer_seconds:.2f} s, dropped {peer_dropped}; near duplicates found: 0/{len(planted_near)}")


if __name__ == "__main__":
    main()
