"""`adhere self-pairs`: pairs from the model's own graded answers, with a fake model whose samples differ in findings,
then with tests/tiny.py's model through LocalBackend and into `adhere dpo`.

    .venv/bin/python -m pytest tests/test_self_pairs.py -q

The fake model (test_synth's fake teacher) answers from the prompt and the sample's seed and counts what it was
asked, so a test can tell sampled answers from cache hits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import adhere.self_pairs
from adhere.config import load_config
from adhere.errors import UserError
from adhere.generation import Generation
from test_cli import run_cli
from test_synth import FakeTeacher as FakeModel  # answers from (prompt, seed) and counts what it was asked

FINDINGS = [{"line": 1, "rule": "a"}, {"line": 2, "rule": "b"}, {"line": 3, "rule": "c"}]
RULES = {"gap_below_margin", "identical_to_chosen", "generation_error", "empty_answers", "over_budget"}


def review(findings: list[dict[str, Any]], message: str = "fix it") -> str:
    return json.dumps({"summary": f"{len(findings)} issues", "suggestions": [{**f, "message": message} for f in findings]})


REFERENCE = review(FINDINGS)
# Per prompt, the answer for sample 0 and sample 1 (seed 0 and 1): how each prompt should end.
ANSWERS: dict[str, Any] = {
    "good": (review(FINDINGS, "other words"), review([{"line": 9, "rule": "z"}])),  # F1 1.0 and 0.0: kept
    "half": (review(FINDINGS[:1]), review([FINDINGS[0], {"line": 9, "rule": "z"}])),  # 0.5 and 0.4: kept, gap 0.6
    "close": (review(FINDINGS), review(FINDINGS[:2])),  # 1.0 and 0.8: gap 0.2 under the margin
    "same": ("  " + REFERENCE.replace(", ", ",  "), REFERENCE),  # the reference, respaced: nothing worse sampled
    "error": (Generation("", "error", 0, 0, error="boom"),) * 2,
    "empty": ("", " "),
}


def by_prompt(prompt: str, seed: int) -> Any:
    return ANSWERS[prompt.split()[0]][seed % 2]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeModel:
    """The fake model as what `generation.refs.opened` builds (behind the real cache)."""
    model = FakeModel(by_prompt)
    monkeypatch.setattr("adhere.generation.refs._backend", lambda ref, config, vllm_logs, batch: model)
    return model


def project(tmp_path: Path, prompts: list[str], self_pairs: dict[str, Any], **sections: Any) -> Path:
    """A project whose data stage already wrote train.jsonl: each prompt with REFERENCE as its answer."""
    rows = [{"messages": [{"role": "system", "content": "Review."}, {"role": "user", "content": p},
                          {"role": "assistant", "content": REFERENCE}], "meta": {"id": f"train-{i}"}}
            for i, p in enumerate(prompts)]
    data = tmp_path / "runs" / "p" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"name": "p", "eval": {"item_f1": {"suggestion": {"list": "suggestions", "key": ["line", "rule"]}}},
              "dpo": {"self_pairs": {"model": "base", "samples": 2, "batch_size": 4, **self_pairs}}, **sections}
    (tmp_path / "adhere.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "adhere.yaml"


def outputs(run_dir: Path) -> tuple[list[dict], list[dict], dict]:
    pairs, rejected = ([json.loads(line) for line in (run_dir / name).read_text().splitlines()]
                       for name in ("pairs.jsonl", "rejected.jsonl"))
    stats = json.loads((run_dir / "stats.json").read_text())
    # Every prompt ends kept or dropped, and the counts say so.
    assert stats["prompts"] == stats["kept"] + stats["dropped"] == stats["pairs"] + stats["pairs_valid"] + len(rejected)
    assert sum(stats["dropped_by_rule"].values()) == stats["dropped"] and set(stats["dropped_by_rule"]) <= RULES
    assert sum(stats["histogram"]["samples"]) == stats["samples_graded"]
    return pairs, rejected, stats


def test_pairs_only_above_the_margin_every_drop_named_and_a_rerun_reads_the_cache(tmp_path: Path, fake: FakeModel) -> None:
    path = project(tmp_path, [f"{name} snippet" for name in ANSWERS], {})
    pairs, rejected, stats = outputs(adhere.self_pairs.run(load_config(path)))
    assert {p["meta"]["prompt_id"]: p["meta"]["scores"]["rejected"] for p in pairs} == {"train-0": 0.0, "train-1": 0.4}
    good = pairs[0]
    assert good["chosen"]["content"] == REFERENCE and good["rejected"]["content"] == ANSWERS["good"][1]
    assert good["messages"] == [{"role": "system", "content": "Review."}, {"role": "user", "content": "good snippet"}]
    assert good["meta"] | {"model": None} == {
        "id": "self-train-0", "source": "self_pairs", "prompt_id": "train-0", "prompt_location": "train.jsonl:1",
        "model": None, "grader": "item_f1", "chosen": "reference", "chosen_sample": None, "rejected_sample": 1,
        "rejected_seed": 1, "scores": {"chosen": 1.0, "rejected": 0.0, "reference": 1.0, "samples": [1.0, 0.0]},
        "sample_errors": 0}
    assert {r["candidate"]["id"]: r["rule"] for r in rejected} == {
        "train-2": "gap_below_margin", "train-3": "identical_to_chosen", "train-4": "generation_error",
        "train-5": "empty_answers"}
    assert "0.200, under dpo.self_pairs.margin 0.3" in rejected[0]["reason"]
    assert stats["mean_reference_score"] == 1.0 and stats["samples_graded"] == 8 and stats["histogram"]["references"][-1] == 6
    assert stats["sampling"]["calls"] == 12 and not (tmp_path / "runs/p/self_pairs/pairs_valid.jsonl").exists()

    asked = len(fake.asked)
    again, _, stats = outputs(adhere.self_pairs.run(load_config(path)))
    assert again == pairs and len(fake.asked) == asked + 2  # only the two errors are asked again (errors are not cached)
    assert stats["sampling"]["cached"] == 10 and stats["sampling"]["calls"] == 2
    _, rejected, _ = outputs(adhere.self_pairs.run(load_config(path, ["dpo.self_pairs.margin=0.2"])))
    assert "train-2" not in {r["candidate"]["id"] for r in rejected}  # a gap equal to the margin is enough


def test_budget_stops_whole_prompts_and_best_sample_as_chosen_with_held_out_pairs(tmp_path: Path, fake: FakeModel) -> None:
    path = project(tmp_path, [f"good {i}" for i in range(12)], {"budget": {"max_calls": 20}, "chosen": "best",
                                                                   "validation_fraction": 0.25})
    pairs, rejected, stats = outputs(adhere.self_pairs.run(load_config(path)))
    # Batches of 4 prompts x 2 samples: 20 answers pay for two batches and the third's first samples, so its
    # prompts lack a sample and are over budget; nothing is ever asked beyond the budget.
    assert stats["kept"] == 8 and stats["dropped_by_rule"] == {"over_budget": 4} and len(fake.asked) == 20
    assert "budget.max_calls=20 reached" in stats["sampling"]["stopped"] and not stats["complete"]
    valid = [json.loads(line) for line in (tmp_path / "runs/p/self_pairs/pairs_valid.jsonl").read_text().splitlines()]
    assert (len(pairs), len(valid)) == (6, 2) and stats["pairs_valid"] == 2
    assert all(p["chosen"]["content"] == ANSWERS["good"][0] and p["meta"]["chosen_sample"] == 0 for p in pairs + valid)

    from adhere.train.dpo import pair_paths

    config = load_config(path)
    assert set(pair_paths(config)) == {"self_pairs", "self_pairs_valid"}
    with pytest.raises(UserError, match="adhere self-pairs p"):
        pair_paths(load_config(path, ["workdir=elsewhere"]))


def test_graders_rank_by_the_configured_score(tmp_path: Path) -> None:
    from adhere.self_pairs.grade import grader

    path = project(tmp_path, ["x"], {}, spec={"output": {"format": "json"}, "constraints": [{"id": "max_words", "n": 3}]})
    score = lambda *sets: grader(load_config(path, list(sets)))  # noqa: E731
    half = review(FINDINGS[:1])
    assert score()(half, REFERENCE) == 0.5 and score()("not json", REFERENCE) == 0.0
    assert score("dpo.self_pairs.grader=exact_match")(REFERENCE + " ", REFERENCE) == 1.0
    assert score("dpo.self_pairs.grader=rouge_l")("fix it", "fix it now") == pytest.approx(0.8)
    checks = lambda answer: score("dpo.self_pairs.grader=checks")(answer, REFERENCE)  # noqa: E731
    assert (checks("not json"), checks('{"a": "b c d e"}'), checks("{}")) == (0.5, 0.5, 1.0)  # JSON, max_words
    blended = score("dpo.self_pairs.checks_weight=0.5")
    assert blended(half, REFERENCE) == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)  # F1 0.5, the review is over 3 words


def test_cli_reports_counts_and_user_errors_exit_2(tmp_path: Path, fake: FakeModel, capsys: Any, monkeypatch: Any) -> None:
    path = project(tmp_path, ["good one", "close one"], {})
    code, out, err = run_cli(capsys, monkeypatch, "self-pairs", str(path))
    assert code == 0, err
    assert "2 prompts: 1 pairs kept (0 held out), 1 dropped" in out and "gap_below_margin" in out
    code, _, err = run_cli(capsys, monkeypatch, "self-pairs", str(path), "--set", "dpo.self_pairs.margin=1.5")
    assert code == 2 and "dpo.self_pairs.margin" in err and "Traceback" not in err
    (tmp_path / "runs/p/data/train.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "close x"},
                                                                               {"role": "assistant", "content": REFERENCE}]}) + "\n")
    code, _, err = run_cli(capsys, monkeypatch, "self-pairs", str(path))
    assert code == 2 and "no pair kept of 1 prompts (gap_below_margin 1)" in err
    code, _, err = run_cli(capsys, monkeypatch, "self-pairs", str(path), "--set", "dpo.self_pairs.model=tuned")
    assert code == 2 and "cannot be 'tuned'" in err
    (tmp_path / "adhere.yaml").write_text(yaml.safe_dump({"name": "p"}))
    code, _, err = run_cli(capsys, monkeypatch, "self-pairs", str(path))
    assert code == 2 and "no dpo.self_pairs section" in err


def test_adhere_run_pairs_before_dpo_only_with_self_pairs(tmp_path: Path) -> None:
    from adhere import pipeline

    path = project(tmp_path, ["good one"], {})
    names = [s.name for s in pipeline.stages(load_config(path))]
    assert names[names.index("train"):] == ["train", "self_pairs", "dpo", "eval"]
    assert "self_pairs" not in [s.name for s in pipeline.stages(load_config(path, ["dpo.self_pairs=null"]))]


def test_tiny_model_samples_pair_and_train_in_dpo(tmp_path: Path, tiny_dir: Path) -> None:
    """The real LocalBackend samples (a random model: every answer differs from the reference), a rerun reads the
    cache, and `adhere dpo` trains on these pairs beside the data stage's."""
    import adhere.train

    prompts = ["Say hi.", "Name a colour.", "Count to three."]
    self_pairs = {"model": "base", "samples": 2, "grader": "rouge_l", "max_new_tokens": 8, "margin": 0.5}
    path = project(tmp_path, prompts, {}, model={"base": str(tiny_dir)}, train={"lora": {"r": 4, "dropout": 0}},
                   dpo={"max_steps": 1, "batch_size": 2, "precision": "fp32", "self_pairs": self_pairs})
    pairs, _, stats = outputs(adhere.self_pairs.run(load_config(path)))
    assert stats["model"].startswith("local:") and stats["sampling"]["calls"] == 6 and len(pairs) == 3
    assert all(p["meta"]["scores"]["chosen"] == 1.0 for p in pairs)  # ROUGE-L of the reference with itself
    again, _, stats = outputs(adhere.self_pairs.run(load_config(path)))
    assert again == pairs and stats["sampling"] == stats["sampling"] | {"calls": 0, "cached": 6}

    data_pair = {"messages": [{"role": "user", "content": "Yes or no?"}], "chosen": {"role": "assistant", "content": "Yes."},
                 "rejected": {"role": "assistant", "content": "No."}, "meta": {"id": "d"}}
    (tmp_path / "runs/p/data/pairs.jsonl").write_text(json.dumps(data_pair) + "\n")
    summary = json.loads((adhere.train.run(load_config(path), stage="dpo") / "summary.json").read_text())
    assert summary["train_examples"] == 4  # the data stage's pair and the model's own 3
