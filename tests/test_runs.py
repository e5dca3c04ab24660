"""Run folders say how they were made: resolved config, environment, lineage by hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from adhere import runs
from adhere.config import load_config


def test_stage_folder_records_config_env_and_lineage(tmp_path: Path) -> None:
    (tmp_path / "adhere.yaml").write_text("name: proj\ntrain: {lr: 0.001}\n")
    config = load_config(tmp_path / "adhere.yaml")
    run_dir = runs.start_stage(config, "data")
    assert run_dir == tmp_path / "runs" / "proj" / "data"
    assert load_config(run_dir / "config.yaml") == config
    env = json.loads((run_dir / "env.json").read_text())
    assert env["packages"]["torch"] and env["hardware"]["torch_threads"] >= 1
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": []}\n')
    out = run_dir / "train.jsonl"
    out.write_text("x\n")
    lineage = json.loads(runs.write_lineage(run_dir, config, {"source": data}, {"train": out}).read_text())
    assert lineage["inputs"]["source"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert lineage["outputs"]["train"]["sha256"] == hashlib.sha256(b"x\n").hexdigest()
    assert lineage["config_sha256"] == hashlib.sha256(config.to_yaml().encode()).hexdigest()


def test_folder_hash_covers_names_and_contents(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"1")
    (folder / "sub" / "b.bin").write_bytes(b"2")
    first = runs.file_hash(folder)
    (folder / "sub" / "b.bin").write_bytes(b"3")
    changed = runs.file_hash(folder)
    (folder / "sub" / "b.bin").rename(folder / "sub" / "c.bin")
    assert len({first, changed, runs.file_hash(folder)}) == 3


def test_git_state_outside_a_repository(tmp_path: Path) -> None:
    assert runs.git_state(tmp_path) is None
