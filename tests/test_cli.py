"""The CLI as a user meets it: exit codes, messages, no tracebacks, files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adhere.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["adhere", *args])
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at the terminal width; keep messages on one line
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_init_creates_a_project_folder_then_check(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, monkeypatch, "init", "my-proj")
    assert code == 0, err
    target = tmp_path / "my-proj" / "adhere.yaml"
    sample = tmp_path / "my-proj" / "data" / "examples.jsonl"
    assert target.is_file() and sample.is_file() and "adhere run my-proj/adhere.yaml" in out
    assert "# Step 1" in target.read_text()  # commented for people to edit
    assert len(sample.read_text().splitlines()) == 40 and "(40 sample support answers)" in out
    code, out, err = run_cli(capsys, monkeypatch, "config", "check", str(target), "--set", "train.lr=1e-4")
    assert code == 0 and "ok" in err
    resolved = yaml.safe_load(out)
    assert resolved["name"] == "my-proj" and resolved["train"]["lr"] == pytest.approx(1e-4)
    assert resolved["workdir"] == str(tmp_path / "my-proj" / "runs" / "my-proj")
    assert resolved["data"]["sources"][0]["path"] == str(sample)
    # A second init would lose the user's edits; an empty folder is fine.
    code, _, err = run_cli(capsys, monkeypatch, "init", "my-proj")
    assert code == 2 and "my-proj: already exists and is not empty; adhere init never overwrites files" in err
    (tmp_path / "empty").mkdir()
    assert run_cli(capsys, monkeypatch, "init", "other", "--dir", "empty")[0] == 0
    assert (tmp_path / "empty" / "adhere.yaml").read_text().startswith("# adhere.yaml")
    code, _, err = run_cli(capsys, monkeypatch, "init", "bad/name")
    assert code == 2 and "project name 'bad/name'" in err and not (tmp_path / "bad").exists()


def test_bad_config_exits_2_without_traceback(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "adhere.yaml"
    path.write_text("name: p\ntrain:\n  lora:\n    r: sixteen\nspec:\n  constraints: [{id: max_word, n: 3}]\n")
    code, out, err = run_cli(capsys, monkeypatch, "config", "check", str(path))
    assert code == 2 and out == ""
    assert 'train.lora.r: expected a positive integer, got "sixteen"' in err
    assert "spec.constraints[0].id: unknown constraint 'max_word'" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path: Path, capsys, monkeypatch) -> None:
    from adhere.errors import UserError

    with pytest.raises(UserError):
        run_cli(capsys, monkeypatch, "--debug", "config", "check", str(tmp_path / "missing.yaml"))


def test_schema_is_json_for_editors(capsys, monkeypatch) -> None:
    code, out, _ = run_cli(capsys, monkeypatch, "config", "schema")
    schema = json.loads(out)
    assert code == 0 and schema["title"] == "adhere.yaml"
    assert set(schema["properties"]) >= {"name", "workdir", "spec", "data", "model", "train", "eval", "serve"}


def test_spec_writes_run_folder_and_checks_a_response(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "adhere.yaml"
    path.write_text(
        "name: p\nspec:\n  task: review\n  output: {format: json, schema: {type: object, required: [summary]}}\n"
        "  constraints: [{id: json_schema}, {id: max_words, n: 5}]\n"
    )
    good = tmp_path / "good.json"
    good.write_text('{"summary": "fine"}')
    code, out, _ = run_cli(capsys, monkeypatch, "spec", str(path), "--response", str(good))
    assert code == 0 and "2 of 2 constraints met" in out
    run_dir = tmp_path / "runs" / "p" / "spec"
    spec = json.loads((run_dir / "spec.json").read_text())
    assert [c["label"] for c in spec["constraints"]] == ["json_schema", "max_words(n=5)"]
    assert {p.name for p in run_dir.iterdir()} >= {"spec.json", "config.yaml", "env.json", "lineage.json"}
    lineage = json.loads((run_dir / "lineage.json").read_text())
    assert lineage["outputs"]["spec"]["path"] == str(run_dir / "spec.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"verdict": "one two three four five six"}')
    code, out, _ = run_cli(capsys, monkeypatch, "spec", str(path), "--response", str(bad))
    assert code == 1 and "FAIL  json_schema" in out and "FAIL  max_words(n=5)" in out
    code, _, err = run_cli(capsys, monkeypatch, "spec", str(path), "--response", str(tmp_path / "none.txt"))
    assert code == 2 and "none.txt: no such file" in err


def test_help_lists_only_working_commands_each_with_help() -> None:
    import typer

    from adhere.cli import app

    group = typer.main.get_command(app)
    assert set(group.commands) == {"init", "config", "run", "spec", "data", "train", "self-pairs", "dpo", "grpo", "eval", "synth", "export", "serve", "feedback", "doctor"}
    result = subprocess.run([sys.executable, "-m", "adhere", "config", "check", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--set" in result.stdout and "resolved config" in result.stdout


def test_data_summary_and_strict(tmp_path: Path, capsys, monkeypatch) -> None:
    rows = [
        {"instruction": "Name the largest planet of the solar system.", "output": "Jupiter is the largest planet."},
        {"instruction": "Name the smallest planet of the solar system.", "output": ""},
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "adhere.yaml"
    path.write_text("name: p\ndata:\n  eval_fraction: 0\n  sources: [{path: d.jsonl}]\n")
    code, out, _ = run_cli(capsys, monkeypatch, "data", str(path))
    assert code == 0 and "2 rows in: 1 train, 0 validation, 0 eval, 1 rejected" in out and "empty_response" in out
    code, _, _ = run_cli(capsys, monkeypatch, "data", str(path), "--strict")
    assert code == 1


def test_data_inspect_marks_trained_tokens(tmp_path: Path, tiny_dir: Path, capsys, monkeypatch) -> None:
    rows = [{"instruction": "Name the largest planet.", "output": "Jupiter is the largest planet."}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "adhere.yaml"
    path.write_text(f"name: p\nmodel: {{base: {tiny_dir}}}\ndata:\n  sources: [{{path: d.jsonl}}]\n")
    code, out, _ = run_cli(capsys, monkeypatch, "data", "inspect", str(path), "--plain")
    assert code == 0
    assert out.startswith(f"{tmp_path / 'd.jsonl'} line 1: ")
    assert "<|im_start|>assistant↵\n[[Jupiter is the largest planet.<|im_end|>]]↵" in out
    # After curation, inspect shows the curated training file.
    assert run_cli(capsys, monkeypatch, "data", str(path), "--set", "data.eval_fraction=0")[0] == 0
    code, out, _ = run_cli(capsys, monkeypatch, "data", "inspect", str(path), "--plain", "--n", "1")
    assert code == 0 and "[[Jupiter is the largest planet.<|im_end|>]]" in out
    code, _, err = run_cli(capsys, monkeypatch, "data", "inspect")
    assert code == 2 and "usage: adhere data inspect" in err
