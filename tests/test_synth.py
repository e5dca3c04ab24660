"""`adhere synth` end to end with a deterministic fake teacher: the three generators, filters, budget, resume, CLI.

    .venv/bin/python -m pytest tests/test_synth.py -q     # a few seconds, no model

The fake teacher (a Backend: name, identity, generate) answers from the last user message and the
sample's seed, and counts what it was asked, so a test can tell paid calls from cache hits.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import adhere.synth
from adhere.cli import main
from adhere.config import load_config
from adhere.eval.ifeval.instructions import check as ifeval_check
from adhere.generation import Generation
from adhere.synth.filters import IFEVAL_PROMPTS, RougePool

IFEVAL_ROWS = [json.loads(line) for line in IFEVAL_PROMPTS.read_text().splitlines()]
Answer = Callable[[str, int], "str | Generation"]


class FakeTeacher:
    """A Backend whose answer is `answer(last user message, params.seed)`; `asked` lists every chat it generated."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.name = "fake-teacher"
        self.identity = "fake-teacher v1"
        self.asked: list[str] = []

    def generate(self, chats: list[list[dict[str, Any]]], params: Any, progress: Any = None) -> list[Generation]:
        out = []
        for i, chat in enumerate(chats):
            self.asked.append(chat[-1]["content"])
            reply = self.answer(chat[-1]["content"], params.seed)
            generation = reply if isinstance(reply, Generation) else Generation(reply, "stop", 10, 5)
            out.append(generation)
            if progress is not None:
                progress(i, generation)
        return out


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Callable[[Answer], FakeTeacher]:
    """Install a fake teacher as what `synth.teacher` builds (behind the real cache and budget)."""

    def install(answer: Answer) -> FakeTeacher:
        teacher = FakeTeacher(answer)
        monkeypatch.setattr("adhere.generation.refs._backend", lambda ref, config, vllm_logs, batch: teacher)
        return teacher

    return install


def project(tmp_path: Path, synth: dict[str, Any], seeds: str, name: str = "seeds.txt", **sections: Any) -> Path:
    (tmp_path / name).write_text(seeds)
    config = {"name": "p", "synth": {"seed_file": name, "batch_size": 4, **synth}, **sections}
    (tmp_path / "adhere.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "adhere.yaml"


def outputs(run_dir: Path) -> tuple[list[dict], list[dict], dict]:
    kept, rejected = ([json.loads(line) for line in (run_dir / name).read_text().splitlines()]
                      for name in ("synth.jsonl", "rejected.jsonl"))
    stats = json.loads((run_dir / "stats.json").read_text())
    # The counts reconcile: every candidate kept or rejected, every seed row kept or dropped.
    assert stats["candidates"] == stats["kept"] + stats["rejected"] == len(kept) + len(
        [r for r in rejected if r["stage"] != "seed_file"])
    assert stats["seeds"]["rows"] == stats["seeds"]["kept"] + stats["seeds"]["dropped"]
    assert sum(stats["rejected_by_rule"].values()) == stats["rejected"]
    return kept, rejected, stats


# ---------------------------------------------------------------- constraints


def lowercase_no_comma(prompt: str, seed: int) -> str | Generation:
    """Passes both constraints on the second sample; some prompts fail in every way a teacher can."""
    if "moon" in prompt:
        return "The Moon, bright."
    if "silent" in prompt:
        return "   "
    if "broken" in prompt:
        return Generation("", "error", 0, 0, error="HTTP 500 from fake")
    if "endless" in prompt:
        return Generation("and so on and so", "length", 10, 64)
    return "Sure, Here It Is." if seed == 0 else "here it is in lowercase and without commas."


CONSTRAINTS = {"mode": "constraints", "constraints": {"kinds": ["punctuation:no_comma", "change_case:english_lowercase"],
                                                      "min_constraints": 2, "max_constraints": 2, "samples": 3}}


def test_constraints_keep_only_answers_passing_every_constraint(tmp_path: Path, fake: Any) -> None:
    teacher = fake(lowercase_no_comma)
    seeds = ["Plan a picnic for four.", "Describe the moon.", "A silent prompt.", "A broken prompt.",
             "An endless story.", "plan a picnic for four.", IFEVAL_ROWS[0]["prompt"], "Explain tides to a child."]
    path = project(tmp_path, CONSTRAINTS, "\n".join(seeds) + "\n", spec={"system_prompt": "Be kind."})
    kept, rejected, stats = outputs(adhere.synth.run(load_config(path)))

    assert [r["messages"][0]["content"].split(".")[0] for r in kept] == ["Plan a picnic for four", "Explain tides to a child"]
    assert stats["rejected_by_rule"] == {"no_passing_response": 1, "empty_response": 1, "teacher_error": 1,
                                         "truncated": 1, "contaminated": 1}
    assert stats["seeds"]["dropped_by_rule"] == {"duplicate": 1}
    assert next(r for r in rejected if r["rule"] == "contaminated")["reason"].startswith("prompt shares a 13-word sequence")
    moon = next(r for r in rejected if r["rule"] == "no_passing_response")
    assert "none of 3 answers passed" in moon["reason"] and "punctuation:no_comma x3" in moon["reason"]
    assert stats["complete"] is False and stats["teacher_usage"]["errors"] == 3  # the broken prompt, 3 samples
    assert not any(IFEVAL_ROWS[0]["prompt"] in asked for asked in teacher.asked)  # contaminated: never sent
    for record in kept:
        meta = record["meta"]
        response = record["messages"][-1]["content"]
        assert all(ifeval_check(i, response, **k) for i, k in zip(meta["instruction_id_list"], meta["kwargs"]))
        assert meta["synthetic"] is True and meta["generator"] == "constraints" and meta["teacher"] == "fake-teacher"
        assert meta["params"]["seed"] == 1 and meta["filters"]["samples_tried"] == 2
        assert meta["seed_task"]["location"] in ("line 1", "line 8") and meta["seed_task"]["file"].endswith("seeds.txt")
        assert [c["phrase"] in record["messages"][0]["content"] for c in meta["constraints"]] == [True, True]
    assert stats["generator"]["samples_per_kept"] == {"2": 2}
    assert stats["generator"]["constraints"]["punctuation:no_comma"] == {"attached": 6, "kept": 2}  # the contaminated prompt was never tried
    # The teacher saw the spec's system prompt with each prompt, as training will.
    assert (tmp_path / "runs" / "p" / "synth" / "lineage.json").is_file()


def test_budget_stops_mid_run_keeps_what_was_made_and_a_rerun_resumes_from_the_cache(tmp_path: Path, fake: Any) -> None:
    prompts = "".join(f"Write note number {i} about gardens.\n" for i in range(10))
    path = project(tmp_path, {**CONSTRAINTS, "target": 4, "budget": {"max_calls": 7}}, prompts)
    teacher = fake(lowercase_no_comma)
    kept, _, stats = outputs(adhere.synth.run(load_config(path)))
    usage = stats["teacher_usage"]
    assert usage["calls"] == len(teacher.asked) == 7 and usage["stopped"] == "budget.max_calls=7 reached"
    # Prompts 1-4 (as many as the target) each pass on their second sample: 8 calls, but only 7 were allowed.
    assert len(kept) == 3 and stats["rejected_by_rule"] == {"budget_exhausted": 1}
    assert stats["generator"]["prompts_not_tried"] == 6

    # The same project again (`adhere synth` then `adhere run`): the 7 answers come from the cache and
    # count against the budget, so nothing new is bought and the output is the same.
    teacher = fake(lowercase_no_comma)
    same, _, stats = outputs(adhere.synth.run(load_config(path)))
    assert teacher.asked == [] and same == kept
    usage = stats["teacher_usage"]
    assert (usage["calls"], usage["cached"]) == (0, 7)
    assert usage["stopped"] == "budget.max_calls=7 reached; 7 of the answers from the cache"

    teacher = fake(lowercase_no_comma)
    config = load_config(path, ["synth.budget.max_calls=0", "synth.target=10"])
    kept, _, stats = outputs(adhere.synth.run(config))
    assert len(kept) == 10 and stats["complete"] is True
    assert len(teacher.asked) == 20 - 7 and stats["teacher_usage"]["cached"] == 7  # nothing paid twice
    teacher = fake(lowercase_no_comma)
    lines: list[str] = []
    again, _, stats = outputs(adhere.synth.run(config, log=lines.append))
    assert teacher.asked == [] and stats["teacher_usage"]["cached"] == 20 and again == kept
    assert not any(line.startswith("teacher:") for line in lines)  # progress only for batches the teacher made


def test_each_teacher_batch_is_logged(tmp_path: Path, fake: Any) -> None:
    prompts = "".join(f"Write note number {i} about gardens.\n" for i in range(3))
    path = project(tmp_path, {**CONSTRAINTS, "target": 3, "batch_size": 2}, prompts)
    fake(lowercase_no_comma)
    lines: list[str] = []
    adhere.synth.run(load_config(path), log=lines.append)
    teacher_lines = [line for line in lines if line.startswith("teacher:")]
    assert teacher_lines and teacher_lines[-1].startswith("teacher: 6 calls,")


def test_prompts_the_budget_kept_from_the_teacher_count_as_not_tried(tmp_path: Path, fake: Any) -> None:
    prompts = "".join(f"Write note number {i} about gardens.\n" for i in range(10))
    path = project(tmp_path, {**CONSTRAINTS, "target": 10, "batch_size": 2, "budget": {"max_calls": 3}}, prompts)
    fake(lowercase_no_comma)
    kept, rejected, stats = outputs(adhere.synth.run(load_config(path)))
    assert kept == [] and len(rejected) == 10 and stats["generator"]["prompts_not_tried"] == 7
    assert stats["generator"]["constraints"]["punctuation:no_comma"] == {"attached": 3, "kept": 0}


def test_token_budget_stops_after_the_batch_that_spent_it(tmp_path: Path, fake: Any) -> None:
    prompts = "".join(f"Write note number {i} about gardens.\n" for i in range(10))
    path = project(tmp_path, {**CONSTRAINTS, "budget": {"max_tokens": 30}}, prompts)
    teacher = fake(lowercase_no_comma)
    _, _, stats = outputs(adhere.synth.run(load_config(path)))
    # 15 tokens an answer: the first batch of 4 spends 60 (the documented one-batch overshoot), then nothing more.
    assert len(teacher.asked) == 4 and stats["teacher_usage"]["tokens"] == 60 and stats["kept"] == 0
    assert stats["rejected_by_rule"] == {"budget_exhausted": 10}  # all 10 prompts were in the one chunk tried


# ---------------------------------------------------------------- self-instruct

PROPOSALS: list[str | Generation] = [
    "Task: Explain how a rainbow forms.\nInput: <none>",
    "Task: Draw a picture of a cat.\nInput: <none>",
    "Task: Hi\nInput: <none>",
    "Task: Explain how a rainbow forms in the sky.\nInput: <none>",
    "",
    Generation("", "error", 0, 0, error="timed out after 120 s, 3 tries"),
    "Task: " + IFEVAL_ROWS[1]["prompt"],
    "Task: Translate this greeting into French.\nInput: Good morning, friends.",
    "- List three fruits.",
    "Task: Summarize the story of a famous novel in two sentences.\nInput: <none>",
]
SEEDS = ["Translate this greeting into French.", "Write a limerick about a sleepy dog.", "Give three tips for studying.",
         "Explain what a noun is.", "Suggest a name for a bakery.", "Convert 5 miles to kilometers."]


def test_self_instruct_filters_each_proposal_and_answers_the_rest(tmp_path: Path, fake: Any) -> None:
    served = iter(PROPOSALS)

    def answer(prompt: str, seed: int) -> str | Generation:
        if prompt.startswith("Write a new task"):
            return next(served)
        return f"Answer: {prompt.splitlines()[0]}"

    teacher = fake(answer)
    synth = {"mode": "self_instruct", "target": 1,
             "self_instruct": {"rounds": 3, "per_round": len(PROPOSALS), "demonstrations": 3}}
    path = project(tmp_path, synth, "".join(json.dumps({"instruction": s}) + "\n" for s in SEEDS), "seeds.jsonl")
    kept, rejected, stats = outputs(adhere.synth.run(load_config(path)))

    proposals = [a for a in teacher.asked if a.startswith("Write a new task")]
    assert len(set(proposals)) == len(PROPOSALS)  # one round (the target was met), every request distinct
    assert stats["rejected_by_rule"] == {"blacklist": 1, "length": 1, "similar": 2, "empty_response": 1,
                                         "teacher_error": 1, "contaminated": 1, "format": 1, "over_target": 1}
    assert [r["messages"][0]["content"] for r in kept] == ["Explain how a rainbow forms."]
    assert kept[0]["messages"][1]["content"] == "Answer: Explain how a rainbow forms."
    assert kept[0]["meta"]["generator"] == "self_instruct" and kept[0]["meta"]["round"] == 0
    similar = [r for r in rejected if r["rule"] == "similar"]
    assert "ROUGE-L 0.77 >= 0.7 with 'Explain how a rainbow forms.'" in similar[0]["reason"]  # pooled this round
    assert "ROUGE-L 1.00" in similar[1]["reason"]  # a seed, copied
    over = next(r for r in rejected if r["rule"] == "over_target")
    assert over["candidate"]["messages"][0]["content"].startswith("Summarize the story")
    assert stats["generator"]["pool_size"] == len(SEEDS) + 2
    pool = RougePool(SEEDS)
    assert pool.most_similar(kept[0]["messages"][0]["content"])[0] < 0.7


# ---------------------------------------------------------------- rewrite

SCHEMA = {"type": "object", "required": ["verdict"], "properties": {"verdict": {"enum": ["approve", "reject"]}}}


def test_rewrite_keeps_the_first_rewrite_that_passes_the_spec(tmp_path: Path, fake: Any) -> None:
    def answer(prompt: str, seed: int) -> str:
        assert prompt.startswith("Rewrite an assistant's response") and '"required": [' in prompt
        if "[Request]\nReview: eval(x)" in prompt:
            return "Looks risky, reject it."  # never JSON: no rewrite passes
        return "Fine by me." if seed == 0 else '{"verdict": "approve"}'

    fake(answer)
    rows = [{"instruction": "Review: x = 1", "output": "Looks fine to me."},
            {"instruction": "Review: eval(x)", "output": "Do not use eval."},
            {"instruction": "Review: y = 2"}]
    spec = {"output": {"format": "json", "schema": SCHEMA}, "constraints": [{"id": "json_schema"}]}
    path = project(tmp_path, {"mode": "rewrite"}, "".join(json.dumps(r) + "\n" for r in rows), "rows.jsonl", spec=spec)
    kept, rejected, stats = outputs(adhere.synth.run(load_config(path)))
    assert [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in kept] == [
        ("Review: x = 1", '{"verdict": "approve"}')]
    meta = kept[0]["meta"]
    assert meta["rewritten_from"] == "Looks fine to me." and meta["filters"]["samples_tried"] == 2
    assert stats["rejected_by_rule"] == {"no_reference": 1, "no_passing_response": 1}
    assert "json_valid x2" in next(r for r in rejected if r["rule"] == "no_passing_response")["reason"]


def test_rewrite_needs_a_spec_with_checks(tmp_path: Path, fake: Any) -> None:
    fake(lambda prompt, seed: "x")
    path = project(tmp_path, {"mode": "rewrite"}, json.dumps({"instruction": "a", "output": "b"}) + "\n", "rows.jsonl")
    with pytest.raises(Exception, match="the spec checks nothing"):
        adhere.synth.run(load_config(path))


# ---------------------------------------------------------------- into the data stage, and the CLI


def test_synthetic_rows_flow_into_adhere_data_and_the_card_separates_them(tmp_path: Path, fake: Any) -> None:
    import adhere.data

    fake(lowercase_no_comma)
    prompts = "".join(f"Write note number {i} about gardens.\n" for i in range(6))
    path = project(tmp_path, CONSTRAINTS, prompts)
    run_dir = adhere.synth.run(load_config(path))
    human = "".join(json.dumps({"instruction": f"Name a color, please ({i}).", "output": f"Color {i}: blue."}) + "\n"
                    for i in range(4))
    (tmp_path / "human.jsonl").write_text(human)
    data = {"sources": [{"path": "human.jsonl"}, {"path": str(run_dir / "synth.jsonl")}], "token_checks": False,
            "eval_fraction": 0.0, "dedup": {"near": False}}
    config = load_config(path, [f"data={json.dumps(data)}"])
    stats = json.loads((adhere.data.run(config) / "stats.json").read_text())
    assert stats["provenance"] == {"human": {"train": 4, "valid": 0, "eval": 0},
                                   "synthetic: constraints by fake-teacher": {"train": 6, "valid": 0, "eval": 0}}
    card = (tmp_path / "runs" / "p" / "data" / "card.md").read_text()
    assert "## Provenance" in card and "| synthetic: constraints by fake-teacher | 6 | 0 |" in card


def run_cli(capsys: Any, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["adhere", *args])
    monkeypatch.setenv("COLUMNS", "200")
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_synth_reports_counts_and_user_errors_exit_2(tmp_path: Path, fake: Any, capsys: Any, monkeypatch: Any) -> None:
    fake(lowercase_no_comma)
    path = project(tmp_path, CONSTRAINTS, "Describe the moon.\nPlan a picnic.\nPlan a picnic.\n")
    code, out, err = run_cli(capsys, monkeypatch, "synth", str(path))
    assert code == 0, err
    assert "2 candidates: 1 kept, 1 rejected; teacher: 5 calls, 75 tokens" in out
    assert "seed file: duplicate" in out and "no_passing_response" in out and "add it to data.sources" in out
    code, _, err = run_cli(capsys, monkeypatch, "synth", str(path), "--set", "synth.targte=3")
    assert code == 2 and "synth.targte: unknown key; did you mean 'target'?" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, monkeypatch, "synth", str(path), "--set", "synth.seed_file=nope.jsonl")
    assert code == 2 and "no such file or folder (synth.seed_file): " in err and "nope.jsonl" in err
    (tmp_path / "adhere.yaml").write_text(yaml.safe_dump({"name": "p"}))
    code, _, err = run_cli(capsys, monkeypatch, "synth", str(path))
    assert code == 2 and "no synth section" in err


def test_adhere_run_puts_synth_first_only_when_configured(tmp_path: Path) -> None:
    from adhere import pipeline

    path = project(tmp_path, CONSTRAINTS, "Plan a picnic.\n")
    config = load_config(path)
    assert [s.name for s in pipeline.stages(config)] == ["synth", *pipeline.NAMES]
    assert pipeline.stages(load_config(path, ["synth=null"])) == pipeline.STAGES
    before = pipeline.fingerprint(pipeline.SYNTH, config)
    (tmp_path / "seeds.txt").write_text("Plan a picnic.\nDescribe snow.\n")
    assert pipeline.fingerprint(pipeline.SYNTH, config) != before  # a changed seed file redoes synth
    assert pipeline.fingerprint(pipeline.SYNTH, load_config(path, ["synth.target=5"])) != pipeline.fingerprint(
        pipeline.SYNTH, config)
