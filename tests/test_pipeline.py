"""`adhere run`: every stage in order on a tiny model, skipped when current, redone when its inputs change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adhere import pipeline
from adhere.config import load_config
from adhere.errors import UserError

SCHEMA = {"type": "object", "required": ["verdict"], "properties": {"verdict": {"enum": ["approve", "reject"]}}}


def make_project(tmp_path: Path, tiny_dir: Path, rows: int = 24) -> Path:
    """A small generated JSON-answer task: approve unless the snippet calls eval()."""
    lines = []
    for i in range(rows):
        risky = i % 3 == 0
        code = f"value_{i} = eval(text_{i})" if risky else f"value_{i} = int(text_{i}) + {i}"
        answer = json.dumps({"verdict": "reject" if risky else "approve"})
        lines.append(json.dumps({"instruction": f"Review snippet {i}: {code}", "output": answer}))
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    config = {
        "name": "demo",
        "spec": {"task": "review", "output": {"format": "json", "schema": SCHEMA}, "constraints": [{"id": "json_schema"}]},
        "data": {"sources": [{"path": "rows.jsonl"}], "eval_fraction": 0.25, "token_checks": False,
                 "dedup": {"near": False}},
        "model": {"base": str(tiny_dir)},
        "train": {"max_steps": 3, "batch_size": 4, "lr": 0.01, "lora": {"r": 4, "alpha": 8}, "save_every": 1},
        "eval": {"max_new_tokens": 4, "bootstrap_resamples": 100},
    }
    (tmp_path / "adhere.yaml").write_text(json.dumps(config))
    return tmp_path / "adhere.yaml"


def events(path: Path, force: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    pipeline.run(load_config(path), lambda event, d: seen.append((event, d.get("name", ""))), force)
    return [(e, n) for e, n in seen if e in ("stage", "skip")]


def test_run_all_stages_then_skip_then_redo_what_changed(tmp_path: Path, tiny_dir: Path) -> None:
    path = make_project(tmp_path, tiny_dir)
    assert events(path) == [("stage", name) for name in pipeline.NAMES]
    workdir = tmp_path / "runs" / "demo"
    results = json.loads((workdir / "eval" / "results.json").read_text())
    assert list(results["models"]) == ["base", "tuned"] and "json_schema_valid" in results["suites"]["held_out"]["metrics"]
    assert list(json.loads((workdir / "baseline" / "results.json").read_text())["models"]) == ["base"]

    assert events(path) == [("skip", name) for name in pipeline.NAMES]  # nothing changed: nothing redone
    # retraining with the same seed writes the same weights, so the evaluation is still current
    assert events(path, force=("train",))[3:] == [("stage", "train"), ("skip", "eval")]

    config = json.loads(path.read_text())
    config["eval"]["max_new_tokens"] = 5  # eval settings only: data and training stay
    path.write_text(json.dumps(config))
    assert events(path) == [("skip", "spec"), ("skip", "data"), ("stage", "baseline"), ("skip", "train"),
                            ("stage", "eval")]
    config["train"]["lr"] = 0.02  # new weights: train and eval again
    path.write_text(json.dumps(config))
    assert events(path)[2:] == [("skip", "baseline"), ("stage", "train"), ("stage", "eval")]


def test_an_interrupted_training_resumes_and_a_failing_stage_keeps_earlier_outputs(tmp_path: Path, tiny_dir: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_project(tmp_path, tiny_dir)
    import adhere.train.loop as loop

    real_eval = pipeline._run_stage

    def crash_in_eval(name, config, report, resume):
        if name == "eval":
            raise UserError("eval: boom")
        return real_eval(name, config, report, resume)

    monkeypatch.setattr(pipeline, "_run_stage", crash_in_eval)
    with pytest.raises(UserError, match="boom"):
        events(path)
    workdir = tmp_path / "runs" / "demo"
    assert (workdir / "train" / "fingerprint.json").is_file() and not (workdir / "eval" / "fingerprint.json").exists()
    monkeypatch.setattr(pipeline, "_run_stage", real_eval)
    assert events(path)[-1] == ("stage", "eval") and events(path)[-1] == ("skip", "eval")

    # a training run cut off after its checkpoints: the next run resumes instead of starting over
    (workdir / "train" / "fingerprint.json").rename(workdir / "train" / "fingerprint.pending.json")
    resumed: list[bool] = []
    real_train = loop.train
    monkeypatch.setattr(loop, "train", lambda config, run_dir, log, resume=None: resumed.append(resume is not None)
                        or real_train(config, run_dir, log, resume=resume))
    events(path)
    assert resumed == [False]  # it had written summary.json: training was done, so it is redone, not resumed
    (workdir / "train" / "fingerprint.json").rename(workdir / "train" / "fingerprint.pending.json")
    (workdir / "train" / "summary.json").unlink()  # as a run cut off mid-way leaves it
    events(path)
    assert resumed == [False, True]


def test_cli_run_prints_the_comparison_and_rejects_an_unknown_stage(tmp_path: Path, tiny_dir: Path) -> None:
    path = make_project(tmp_path, tiny_dir)
    # a real process: rich's live progress and the final table as a user's terminal gets them (COLUMNS=200)
    adhere = Path(sys.executable).parent / "adhere"
    result = subprocess.run([str(adhere), "run", str(path)], capture_output=True, text=True, env={**os.environ,
                            "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[5/5] Evaluate base vs tuned: done" in result.stderr
    assert "Valid per the JSON schema" in result.stdout and "report.html" in result.stdout
    again = subprocess.run([str(adhere), "run", str(path), "--force", "nothing"], capture_output=True, text=True,
                           check=False)
    assert again.returncode == 2 and "--force nothing: no such stage" in again.stderr


def test_bad_projects_stop_at_their_stage_with_a_clear_message_and_keep_earlier_outputs(
        tmp_path: Path, tiny_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from adhere.cli import main

    def run_cli(path: Path) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["adhere", "run", str(path)])
        with pytest.raises(SystemExit) as stop:
            main()
        return int(stop.value.code or 0), capsys.readouterr().err

    # every row rejected: the data stage stops the run; the spec stage's outputs stay
    (tmp_path / "empty").mkdir()
    path = make_project(tmp_path / "empty", tiny_dir)
    (path.parent / "rows.jsonl").write_text('{"instruction": "Review snippet 0", "output": ""}\n' * 3)
    code, err = run_cli(path)
    workdir = path.parent / "runs" / "demo"
    assert code == 2 and "data" in err and "rejected" in err, err
    assert (workdir / "spec" / "fingerprint.json").is_file() and not (workdir / "baseline").exists()

    # a model that cannot be loaded: stops at the first stage that needs it, naming model.base
    (tmp_path / "nomodel").mkdir()
    path = make_project(tmp_path / "nomodel", tiny_dir)
    config = json.loads(path.read_text())
    config["model"]["base"] = str(tmp_path / "no-such-model")
    path.write_text(json.dumps(config))
    code, err = run_cli(path)
    workdir = path.parent / "runs" / "demo"
    assert code == 2 and "model.base" in err and "no-such-model" in err, err
    assert (workdir / "spec" / "fingerprint.json").is_file() and not (workdir / "train" / "fingerprint.json").exists()

    # a workdir that cannot be written (a file stands where its folder should be)
    (tmp_path / "blocked").mkdir()
    path = make_project(tmp_path / "blocked", tiny_dir)
    (path.parent / "runs").write_text("a file, not a folder")
    code, err = run_cli(path)
    assert code == 2 and "cannot write" in err and "set workdir" in err and "Traceback" not in err, err


def test_data_is_redone_when_train_max_length_changes(tmp_path: Path, tiny_dir: Path) -> None:
    path = make_project(tmp_path, tiny_dir)
    config = json.loads(path.read_text())
    config["data"]["token_checks"] = True  # the token filter reads train.max_length
    path.write_text(json.dumps(config))
    events(path)
    data_dir = tmp_path / "runs" / "demo" / "data"
    tokens = sorted(r["meta"]["tokens"] for split in ("train", "eval") for r in map(
        json.loads, (data_dir / f"{split}.jsonl").read_text().splitlines()))
    config["train"]["max_length"] = limit = tokens[len(tokens) // 2]  # half the rows no longer fit
    path.write_text(json.dumps(config))
    assert events(path)[1:4] == [("stage", "data"), ("stage", "baseline"), ("stage", "train")]
    stats = json.loads((data_dir / "stats.json").read_text())
    assert stats["rejected_by_rule"]["too_many_tokens"] == sum(t > limit for t in tokens)
    kept = [json.loads(line) for line in (data_dir / "train.jsonl").read_text().splitlines()]
    assert kept and all(r["meta"]["tokens"] <= limit for r in kept)  # none left for training to truncate


def test_every_setting_and_file_a_stage_reads_is_in_its_fingerprint(tmp_path: Path, tiny_dir: Path) -> None:
    path = make_project(tmp_path, tiny_dir)
    data, train = pipeline.STAGES[1], pipeline.STAGES[3]
    print_ = lambda stage, *overrides: pipeline.fingerprint(stage, load_config(path, list(overrides)))  # noqa: E731
    before = print_(data)
    for setting in ("train.max_length=64", "train.eval_every=5", "data.validation_fraction=0.2",
                    "eval.suites=[held_out, ifeval]", "model.chat_template=template.jinja"):
        (tmp_path / "template.jinja").write_text("{{ messages }}")
        assert print_(data, setting) != before, setting
    for setting in ("train.lr=0.5", "eval.max_new_tokens=9", "eval.suites=[held_out, judge]"):  # not read by data
        assert print_(data, setting, "eval.judge.model=base") == before, setting
    # the contents of the files it reads: a decontamination target, the IFEval file, the chat template
    for setting in ("data.decontam.targets=[bench.jsonl]", "eval.ifeval_file=bench.jsonl", "model.chat_template=bench.jsonl"):
        (tmp_path / "bench.jsonl").write_text('{"prompt": "one"}\n')
        first = print_(data, setting, "eval.suites=[ifeval]", "data.token_checks=true")
        (tmp_path / "bench.jsonl").write_text('{"prompt": "two"}\n')
        assert print_(data, setting, "eval.suites=[ifeval]", "data.token_checks=true") != first, setting
    # training reads the validation split when the data stage wrote one, and never the eval split
    events(path)
    before = print_(train)
    (tmp_path / "runs" / "demo" / "data" / "eval.jsonl").write_text("{}\n")
    assert print_(train) == before
    (tmp_path / "runs" / "demo" / "data" / "valid.jsonl").write_text("{}\n")
    assert print_(train) != before


def test_init_makes_a_project_that_runs_through_every_stage(tmp_path: Path, tiny_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from adhere.init import create

    files = create("first", tmp_path / "first")
    assert files == {"config": tmp_path / "first" / "adhere.yaml", "data": tmp_path / "first" / "data" / "examples.jsonl"}
    # the tiny model stands in for the embedded one; the rest is the template as a newcomer gets it
    tiny = [f"model.base={tiny_dir}", "train.max_steps=2", "eval.max_new_tokens=4", "eval.bootstrap_resamples=50"]
    config = load_config(files["config"], tiny)
    seen: list[tuple[str, str]] = []
    pipeline.run(config, lambda event, d: seen.append((event, d.get("name", ""))))
    assert [n for e, n in seen if e == "done"] == list(pipeline.NAMES)
    stats = json.loads((config.stage_dir("data") / "stats.json").read_text())
    assert stats["rows_in"] == 40 and stats["rejected"] == 0, stats["rejected_by_rule"]  # every sample row fits the spec
    assert (stats["train"], stats["valid"], stats["eval"]) == (32, 0, 8)
    assert (config.stage_dir("eval") / "report.html").is_file()


def test_a_missing_source_is_reported_alike_by_every_command(tmp_path: Path, tiny_dir: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from adhere.cli import main

    path = make_project(tmp_path, tiny_dir)
    (tmp_path / "rows.jsonl").unlink()
    messages = []
    for command in (["run"], ["data"], ["data", "inspect"]):
        monkeypatch.setattr(sys, "argv", ["adhere", *command, str(path)])
        monkeypatch.setenv("COLUMNS", "300")
        with pytest.raises(SystemExit) as stop:
            main()
        assert stop.value.code == 2
        messages.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert messages[0] == messages[1] == messages[2] == (
        f"error: no such file or folder (data.sources[0].path): {tmp_path / 'rows.jsonl'}; create it, or fix the path "
        "in adhere.yaml (a relative path starts at the folder of adhere.yaml)")
