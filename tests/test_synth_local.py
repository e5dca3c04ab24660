"""`adhere synth` with a real local teacher: tests/tiny.py's 2-layer model through LocalBackend, cache and budget.

    .venv/bin/python -m pytest tests/test_synth_local.py -q     # about ten seconds

A random tiny model writes gibberish, so what is kept is not the point: both generators must run
end to end through the real backend, account for every candidate, keep only answers that pass
their checks, and answer a rerun entirely from the cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import adhere.synth
from adhere.config import load_config
from adhere.eval.ifeval.instructions import check as ifeval_check

KNOWN_RULES = {"no_passing_response", "truncated", "empty_response", "budget_exhausted", "over_target", "unparseable",
               "length", "format", "blacklist", "similar", "contaminated", "spec_violation"}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: two threads spin-wait on each other on a model this small
    yield
    torch.set_num_threads(before)


def run(tmp_path: Path, tiny_dir: Path, synth: dict) -> tuple[list[dict], dict]:
    (tmp_path / "seeds.txt").write_text("Describe a quiet harbor town.\nList ways to save water.\nExplain rain.\n")
    config = {"name": "p", "synth": {"seed_file": "seeds.txt", "teacher": {"name": "tiny", "kind": "folder",
                                                                          "path": str(tiny_dir)},
                                     "max_new_tokens": 8, "batch_size": 3, **synth}}
    (tmp_path / "adhere.yaml").write_text(yaml.safe_dump(config))
    run_dir = adhere.synth.run(load_config(tmp_path / "adhere.yaml"))
    kept = [json.loads(line) for line in (run_dir / "synth.jsonl").read_text().splitlines()]
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["candidates"] == stats["kept"] + stats["rejected"] == len(kept) + stats["rejected"]
    assert set(stats["rejected_by_rule"]) <= KNOWN_RULES
    return kept, stats


def test_constraints_with_a_tiny_local_teacher(tmp_path: Path, tiny_dir: Path) -> None:
    synth = {"mode": "constraints", "constraints": {"samples": 2, "variants": 2}}
    kept, stats = run(tmp_path, tiny_dir, synth)
    usage = stats["teacher_usage"]
    assert stats["candidates"] == 6 and usage["calls"] + usage["cached"] >= 6 and usage["errors"] == 0
    assert stats["teacher"].startswith("local:")
    for record in kept:  # whatever it kept passes every attached constraint
        meta = record["meta"]
        assert all(ifeval_check(i, record["messages"][1]["content"], **k)
                   for i, k in zip(meta["instruction_id_list"], meta["kwargs"]))
    assert (tmp_path / "runs" / "p" / "synth" / "cache" / "generations.sqlite").is_file()
    again, stats = run(tmp_path, tiny_dir, synth)
    assert stats["teacher_usage"]["calls"] == 0 and again == kept  # the rerun is read from the cache


def test_self_instruct_with_a_tiny_local_teacher(tmp_path: Path, tiny_dir: Path) -> None:
    synth = {"mode": "self_instruct", "self_instruct": {"rounds": 2, "per_round": 3, "demonstrations": 1, "min_words": 1}}
    kept, stats = run(tmp_path, tiny_dir, synth)
    assert stats["generator"]["proposals"]["proposed"] == stats["candidates"] == 6
    assert stats["teacher_usage"]["calls"] >= 6
    again, stats = run(tmp_path, tiny_dir, synth)
    assert stats["teacher_usage"]["calls"] == 0 and again == kept
