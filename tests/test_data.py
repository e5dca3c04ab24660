"""Step 2: every format, every rejection rule, curation steps, and counts that reconcile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import adhere.data
from adhere.config import load_config
from adhere.data.formats import detect_format, from_alpaca
from adhere.data.records import Rejection
from adhere.errors import UserError

ANSWERS = [
    "Paris is the capital of France and its largest city.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "A haiku has three lines of five, seven and five syllables.",
    "The mitochondria produce most of the energy a cell uses.",
    "Binary search halves the remaining range at every comparison.",
]


def alpaca_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    topics = ["rivers", "volcanoes", "planets", "bridges", "forests", "deserts", "glaciers", "islands", "canyons", "reefs"]
    rows = []
    for i in range(offset, offset + n):
        topic = topics[i % len(topics)]
        rows.append(
            {
                "instruction": f"Write fact number {i} about {topic} for a school quiz, item {i * 7919 % 10007}.",
                "input": "",
                "output": f"Fact {i}: {ANSWERS[i % len(ANSWERS)]} This relates to {topic} case {i * 104729 % 99991}.",
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(autouse=True)
def _tiny_model(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADHERE_TEST_MODEL", str(tiny_dir))


def project(tmp_path: Path, data_yaml: str, spec_yaml: str = "", max_length: int = 256) -> Path:
    """A project file whose model is the tiny test model (token checks render with its ChatML template)."""
    import os

    path = tmp_path / "adhere.yaml"
    model = f"model: {{base: {os.environ['ADHERE_TEST_MODEL']}}}\ntrain: {{max_length: {max_length}}}\n"
    path.write_text(f"name: p\n{model}{spec_yaml}data:\n{data_yaml}")
    return path


def run_data(path: Path, *overrides: str) -> tuple[dict[str, Any], Path]:
    run_dir = adhere.data.run(load_config(path, list(overrides)))
    return json.loads((run_dir / "stats.json").read_text()), run_dir


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_alpaca_input_is_folded_into_the_user_turn() -> None:
    messages = from_alpaca({"instruction": "Translate.", "input": "Bonjour", "output": "Hello", "system": "Be brief."})
    assert messages == [
        {"role": "system", "content": "Be brief.", "weight": 1},
        {"role": "user", "content": "Translate.\n\nBonjour", "weight": 1},
        {"role": "assistant", "content": "Hello", "weight": 1},
    ]
    assert from_alpaca({"instruction": "Say hi.", "output": "Hi"})[0]["content"] == "Say hi."


def test_format_detection() -> None:
    assert detect_format({"messages": []}) == "messages"
    assert detect_format({"conversations": []}) == "sharegpt"
    assert detect_format({"instruction": "", "input": "", "output": ""}) == "alpaca"
    assert detect_format({"prompt": "", "completion": ""}) == "prompt_completion"
    assert detect_format({"question": "", "answer": ""}) is None


def test_every_format_and_file_type_loads(tmp_path: Path) -> None:
    import pandas as pd
    from datasets import Dataset

    rows = alpaca_rows(40)
    write_jsonl(tmp_path / "a.jsonl", rows[:8])
    (tmp_path / "b.json").write_text(json.dumps(rows[8:16]))
    pd.DataFrame([{"q": r["instruction"], "a": r["output"]} for r in rows[16:24]]).to_csv(tmp_path / "c.csv", index=False)
    pd.DataFrame([{"prompt": r["instruction"], "completion": r["output"]} for r in rows[24:32]]).to_parquet(tmp_path / "d.parquet")
    Dataset.from_list(
        [{"conversations": [{"from": "human", "value": r["instruction"]}, {"from": "gpt", "value": r["output"]}]} for r in rows[32:36]]
    ).save_to_disk(str(tmp_path / "e_folder"))
    write_jsonl(
        tmp_path / "f.jsonl",
        [{"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]} for r in rows[36:40]],
    )
    data_yaml = (
        "  eval_fraction: 0.25\n  sources:\n    - {path: a.jsonl}\n    - {path: b.json, format: alpaca}\n"
        "    - {path: c.csv, columns: {instruction: q, output: a}}\n    - {path: d.parquet}\n    - {path: e_folder}\n"
        "    - {path: f.jsonl, format: messages}\n"
    )
    stats, run_dir = run_data(project(tmp_path, data_yaml))
    assert stats["rows_in"] == 40 and stats["rejected"] == 0, stats["rejected_by_rule"]
    assert stats["train"] == 30 and stats["eval"] == 10
    records = read_jsonl(run_dir / "train.jsonl") + read_jsonl(run_dir / "eval.jsonl")
    formats = {Path(r["meta"]["source"]).name: r["meta"]["format"] for r in records}
    assert formats == {"a.jsonl": "alpaca", "b.json": "alpaca", "c.csv": "columns", "d.parquet": "prompt_completion",
                       "e_folder": "sharegpt", "f.jsonl": "messages"}
    assert all(r["messages"][-1]["role"] == "assistant" for r in records)
    assert {p.name for p in run_dir.iterdir()} >= {"train.jsonl", "eval.jsonl", "rejected.jsonl", "stats.json", "card.md",
                                                  "lengths.png", "config.yaml", "env.json", "lineage.json"}


def test_split_is_deterministic_and_stratified(tmp_path: Path) -> None:
    rows = [dict(r, type="quiz" if i % 4 else "essay") for i, r in enumerate(alpaca_rows(40))]
    write_jsonl(tmp_path / "a.jsonl", rows)
    path = project(tmp_path, "  eval_fraction: 0.25\n  stratify_by: type\n  sources: [{path: a.jsonl}]\n")
    _, run_dir = run_data(path)
    first = (run_dir / "eval.jsonl").read_text()
    evals = read_jsonl(run_dir / "eval.jsonl")
    assert sum(r["meta"]["type"] == "essay" for r in evals) == 2 and sum(r["meta"]["type"] == "quiz" for r in evals) == 8
    run_data(path)
    assert (run_dir / "eval.jsonl").read_text() == first
    _, run_dir = run_data(path, "data.seed=1")
    assert (run_dir / "eval.jsonl").read_text() != first


BROKEN_JSONL = [
    '{"instruction": "Name a colour of the sky on a clear day.", "output": "Blue."}',
    '{"instruction": "truncated row", "outp',
    '{"instruction": "No output here."}',
    '{"instruction": "Wrong type", "output": 42}',
    '{"instruction": "Empty answer", "output": "   "}',
    '["not", "an", "object"]',
    '{"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]}',
    '{"messages": [{"role": "assistant", "content": "I speak first"}, {"role": "user", "content": "ok"}]}',
    '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "assistant", "content": "c"}]}',
    '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}',
    '{"question": "unmapped", "answer": "format"}',
]


def test_broken_rows_each_get_a_precise_reason(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_bytes("\n".join(BROKEN_JSONL).encode() + b'\n{"instruction": "Bad \xff byte", "output": "x"}\n')
    stats, run_dir = run_data(project(tmp_path, "  eval_fraction: 0\n  sources: [{path: broken.jsonl, format: auto}]\n"))
    rejected = {r["location"]: (r["rule"], r["reason"]) for r in read_jsonl(run_dir / "rejected.jsonl")}
    assert rejected["line 2"][0] == "malformed_json" and "not valid JSON" in rejected["line 2"][1]
    assert rejected["line 3"] == ("missing_field", "missing field 'output'")
    assert rejected["line 4"] == ("wrong_type", "output: expected a string, got int")
    assert rejected["line 5"][0] == "empty_response"
    assert rejected["line 6"] == ("wrong_type", "expected a JSON object, got list")
    assert rejected["line 7"][0] == "missing_field"  # detected as alpaca from line 1; a messages row lacks its fields
    assert rejected["line 12"][0] == "invalid_utf8"
    assert stats["rows_in"] == 12 and stats["kept"] + stats["rejected"] == 12 and stats["kept"] == 1


def test_messages_rules(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "m.jsonl", [json.loads(line) for line in BROKEN_JSONL[6:10]])
    stats, run_dir = run_data(project(tmp_path, "  eval_fraction: 0\n  sources: [{path: m.jsonl, format: messages}]\n"))
    rules = [(r["rule"], r["reason"]) for r in read_jsonl(run_dir / "rejected.jsonl")]
    assert rules == [
        ("unknown_role", "messages[1].role: 'robot' is not one of system, user, assistant"),
        ("role_order", "messages[0]: an assistant turn with no user turn before it"),
        ("role_order", "messages[2]: two assistant turns in a row"),
        ("no_trained_turn", "every assistant turn has weight 0, so the example trains nothing"),
    ]


def test_sharegpt_unknown_speaker(tmp_path: Path) -> None:
    rows = [{"conversations": [{"from": "human", "value": "Hi there, how are you?"}, {"from": "gpt", "value": "Fine, thanks."}]},
            {"conversations": [{"from": "human", "value": "Run it"}, {"from": "tool", "value": "{}"}]}]
    write_jsonl(tmp_path / "s.jsonl", rows)
    _, run_dir = run_data(project(tmp_path, "  eval_fraction: 0\n  sources: [{path: s.jsonl}]\n"))
    (rejected,) = read_jsonl(run_dir / "rejected.jsonl")
    assert rejected["rule"] == "unknown_role" and "conversations[1].from: 'tool'" in rejected["reason"]


def test_csv_missing_column_ragged_rows_and_bad_bytes(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_bytes(
        b"question,answer\n\"What is 2+2?\",\"Four, since two plus two is four.\"\nonly-a-question\n"
        b"a,b,c\n\"Caf\xe9?\",\"latin-1 bytes\"\n"
    )
    stats, run_dir = run_data(project(tmp_path, "  eval_fraction: 0\n  sources: [{path: c.csv, columns: {instruction: question, output: answer}}]\n"))
    rejected = [(r["location"], r["rule"]) for r in read_jsonl(run_dir / "rejected.jsonl")]
    assert rejected == [("row 2 (line 3)", "missing_field"), ("row 3 (line 4)", "malformed_csv"), ("row 4 (line 5)", "invalid_utf8")]
    assert stats["kept"] == 1


def test_parquet_with_wrong_types(tmp_path: Path) -> None:
    import pandas as pd

    pd.DataFrame({"prompt": ["Say a word.", "Count."], "completion": ["Word, here it is.", None]}).to_parquet(tmp_path / "p.parquet")
    pd.DataFrame({"prompt": ["Add one to five."], "completion": [6]}).to_parquet(tmp_path / "q.parquet")
    stats, run_dir = run_data(project(tmp_path, "  eval_fraction: 0\n  sources: [{path: p.parquet}, {path: q.parquet}]\n"))
    reasons = [(Path(r["source"]).name, r["reason"]) for r in read_jsonl(run_dir / "rejected.jsonl")]
    assert reasons == [("p.parquet", "missing field 'completion'"), ("q.parquet", "completion: expected a string, got int")]


def test_spec_violations_name_the_failing_check(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "r.jsonl", [
        {"instruction": "Review the code in file one please.", "output": '{"summary": "ok", "suggestions": []}'},
        {"instruction": "Review the code in file two please.", "output": '{"summary": 3}'},
        {"instruction": "Review the code in file three please.", "output": "Looks good to me!"},
    ])
    spec = "spec:\n  output: {format: json, schema: {type: object, required: [summary, suggestions], properties: {summary: {type: string}}}}\n  constraints: [{id: json_schema}]\n"
    stats, run_dir = run_data(project(tmp_path, "  eval_fraction: 0\n  sources: [{path: r.jsonl}]\n", spec))
    rejected = read_jsonl(run_dir / "rejected.jsonl")
    assert [(r["location"], r["rule"]) for r in rejected] == [("line 2", "spec_violation"), ("line 3", "spec_violation")]
    assert "json_schema" in rejected[0]["reason"] and stats["kept"] == 1


def test_exact_and_near_duplicates_name_the_kept_row(tmp_path: Path) -> None:
    rows = alpaca_rows(20)
    exact = dict(rows[3], instruction="  " + rows[3]["instruction"].upper() + " ")  # same words after normalising
    near = dict(rows[5], output=rows[5]["output"] + " Indeed.")
    write_jsonl(tmp_path / "d.jsonl", rows + [exact, near])
    stats, run_dir = run_data(project(tmp_path, "  eval_fraction: 0\n  sources: [{path: d.jsonl}]\n"))
    rejected = {r["location"]: r for r in read_jsonl(run_dir / "rejected.jsonl")}
    assert rejected["line 21"]["rule"] == "exact_duplicate" and "d.jsonl line 4" in rejected["line 21"]["reason"]
    assert rejected["line 22"]["rule"] == "near_duplicate" and "d.jsonl line 6" in rejected["line 22"]["reason"]
    assert stats["curation_dropped"] == {"exact_dedup": 1, "near_dedup": 1, "quality": 0, "tokens": 0, "decontam": 0}


def test_quality_heuristics(tmp_path: Path) -> None:
    rows = alpaca_rows(4) + [
        {"instruction": "Explain recursion to a child in simple words.", "output": "As an AI language model, I cannot do that."},
        {"instruction": "Describe the sea in a few words for me now.", "output": "Describe the sea in a few words for me now."},
        {"instruction": "Write a long story about a robot learning.", "output": " ".join(["the robot walked home"] * 20)},
    ]
    write_jsonl(tmp_path / "q.jsonl", rows)
    _, run_dir = run_data(project(tmp_path, "  eval_fraction: 0\n  sources: [{path: q.jsonl}]\n"))
    assert [r["rule"] for r in read_jsonl(run_dir / "rejected.jsonl")] == ["refusal", "copies_prompt", "repetitive"]


def test_decontamination_against_a_benchmark_and_the_eval_split(tmp_path: Path) -> None:
    bench = "Write a 300+ word summary of the wikipedia page about the history of the printing press in Europe."
    write_jsonl(tmp_path / "bench.jsonl", [{"key": 1, "prompt": bench}])
    rows = alpaca_rows(10) + [{"instruction": f"Please {bench.lower()} Thanks!", "output": "The printing press changed Europe."}]
    write_jsonl(tmp_path / "t.jsonl", rows)
    path = project(tmp_path, "  eval_fraction: 0\n  sources: [{path: t.jsonl}]\n  decontam: {targets: [bench.jsonl]}\n")
    stats, run_dir = run_data(path)
    (rejected,) = read_jsonl(run_dir / "rejected.jsonl")
    assert rejected["rule"] == "contaminated" and "bench.jsonl line 1" in rejected["reason"] and stats["kept"] == 10
    # A training prompt that shares 13 words with an explicit eval file is dropped too.
    assert len(rows[10]["instruction"].split()) > 13
    write_jsonl(tmp_path / "e.jsonl", [{"instruction": "Also: " + rows[10]["instruction"][7:], "output": "Yes."}])
    stats, _ = run_data(path, "data.eval_file=e.jsonl", "data.decontam.targets=[]")
    assert stats["rejected_by_rule"] == {"contaminated": 1} and stats["eval"] == 1 and stats["train"] == 10


def test_source_cap_accounts_for_every_row(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", alpaca_rows(30))
    stats, _ = run_data(project(tmp_path, "  eval_fraction: 0.1\n  sources: [{path: a.jsonl, max_rows: 12}]\n"))
    assert stats["kept"] == 12 and stats["rejected_by_rule"] == {"not_sampled": 18}
    assert stats["sources"][str(tmp_path / "a.jsonl")] == {"rows_in": 30, "kept": 12, "rejected": 18, "by_rule": {"not_sampled": 18}}


def test_unreadable_files_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"instruction": "a"}\n{"instruction": "b"}\n')
    (tmp_path / "x.txt").write_text("hello")
    for name, message in [("missing.jsonl", "no such file"), ("bad.json", "name it .jsonl"), ("x.txt", "unknown file type")]:
        with pytest.raises(UserError, match=message):
            run_data(project(tmp_path, f"  sources: [{{path: {name}}}]\n"))
    with pytest.raises(UserError, match="data.sources is empty"):
        run_data(project(tmp_path, "  eval_fraction: 0.1\n"))


def test_rejection_is_an_exception_with_rule_and_reason() -> None:
    with pytest.raises(Rejection) as info:
        from_alpaca({"output": "x"})
    assert (info.value.rule, info.value.reason) == ("missing_field", "missing field 'instruction'")


def test_semantic_duplicates_with_the_packaged_embedding_model(tmp_path: Path) -> None:
    rows = alpaca_rows(6) + [
        {"instruction": "How do I reverse a list in Python?", "output": "Call reversed(items) or use items[::-1]."},
        {"instruction": "What is the way to reverse a Python list?", "output": "Use items[::-1] or call reversed(items)."},
    ]
    write_jsonl(tmp_path / "s.jsonl", rows)
    path = project(tmp_path, "  eval_fraction: 0\n  sources: [{path: s.jsonl}]\n  dedup: {semantic: true, semantic_threshold: 0.9}\n")
    stats, run_dir = run_data(path)
    (rejected,) = read_jsonl(run_dir / "rejected.jsonl")
    assert rejected["rule"] == "semantic_duplicate" and rejected["location"] == "line 8" and "s.jsonl line 7" in rejected["reason"]
    assert stats["curation_dropped"]["semantic_dedup"] == 1
    assert stats["embedding_clusters"]["clusters"] == 1 and "Embedding clusters" in (run_dir / "card.md").read_text()


def test_cluster_coverage_separates_spread_from_clumped() -> None:
    import torch

    from adhere.data.semantic import cluster_coverage

    torch.manual_seed(0)
    spread = torch.nn.functional.normalize(torch.randn(200, 16), dim=1)
    clumped = torch.nn.functional.normalize(torch.randn(1, 16) + 0.01 * torch.randn(200, 16), dim=1)
    assert cluster_coverage(spread)["coverage"] > 0.6
    assert cluster_coverage(clumped)["coverage"] < cluster_coverage(spread)["coverage"]


def test_token_checks_use_the_training_chat_template(tmp_path: Path) -> None:
    from adhere.models.masking import render
    from tiny import build_tiny_tokenizer

    rows = alpaca_rows(3) + [{"instruction": "Tell a very long story about rivers please.", "output": "river " * 400}]
    write_jsonl(tmp_path / "t.jsonl", rows)
    stats, run_dir = run_data(project(tmp_path, "  eval_fraction: 0\n  quality: {enabled: false}\n  sources: [{path: t.jsonl}]\n", max_length=400))
    (rejected,) = read_jsonl(run_dir / "rejected.jsonl")
    assert rejected["rule"] == "too_many_tokens" and "more than train.max_length=400" in rejected["reason"]
    kept = read_jsonl(run_dir / "train.jsonl")
    tokenizer = build_tiny_tokenizer()
    for record in kept:  # the counts in meta are exactly what training will see
        rendered = render(tokenizer, record["messages"])
        assert record["meta"]["tokens"] == len(rendered.input_ids) and record["meta"]["trained_tokens"] == rendered.trained_tokens


@pytest.mark.parametrize("action", ["flag", "redact", "drop"])
def test_pii_is_flagged_redacted_or_dropped(tmp_path: Path, action: str) -> None:
    rows = alpaca_rows(5) + [
        {"instruction": "Draft a reply to the customer about the late parcel.", "output": "Dear Ana, write to ana.silva@example.com and we will help."},
        {"instruction": "Store the deployment credentials in the settings file.", "output": "AWS_KEY = 'AKIAIOSFODNN7EXAMPLE' goes in settings.py"},
    ]
    write_jsonl(tmp_path / "p.jsonl", rows)
    stats, run_dir = run_data(project(tmp_path, f"  eval_fraction: 0\n  pii: {action}\n  sources: [{{path: p.jsonl}}]\n"))
    assert stats["pii"]["flagged_rows"] == 2 and stats["pii"]["totals"] == {"email": 1, "secret": 1}
    assert [f["where"] for f in stats["pii"]["flagged"]] == ["p.jsonl line 6", "p.jsonl line 7"]
    train = (run_dir / "train.jsonl").read_text()
    if action == "flag":
        assert "ana.silva@example.com" in train and stats["kept"] == 7
    elif action == "redact":
        assert "ana.silva@example.com" not in train and "[EMAIL]" in train and "[SECRET]" in train and stats["kept"] == 7
    else:
        assert stats["kept"] == 5 and stats["rejected_by_rule"] == {"pii": 2}
    assert "p.jsonl line 6 | email" in (run_dir / "card.md").read_text()


def test_size_limit_and_unknown_format(tmp_path: Path) -> None:
    rows = alpaca_rows(2) + [{"instruction": "Summarise this.", "output": "x" * 500}, {"question": "a", "answer": "b"}]
    write_jsonl(tmp_path / "z.jsonl", rows)
    stats, run_dir = run_data(project(tmp_path, "  eval_fraction: 0\n  max_chars: 300\n  sources: [{path: z.jsonl}]\n"))
    reasons = [(r["rule"], r["reason"]) for r in read_jsonl(run_dir / "rejected.jsonl")]
    assert reasons[0] == ("too_long", "515 characters of text, more than data.max_chars=300")
    assert reasons[1][0] == "missing_field"
    write_jsonl(tmp_path / "u.jsonl", [{"question": "a", "answer": "b"}])
    _, run_dir = run_data(project(tmp_path, "  eval_fraction: 0\n  sources: [{path: u.jsonl}]\n"))
    (rejected,) = read_jsonl(run_dir / "rejected.jsonl")
    assert rejected["rule"] == "unknown_format" and "fields (answer, question) match no known format" in rejected["reason"]


def test_spec_system_prompt_frames_every_example(tmp_path: Path) -> None:
    rows = alpaca_rows(2) + [{"messages": [{"role": "system", "content": "Own system."}, {"role": "user", "content": "Hello there friend"}, {"role": "assistant", "content": "Hi!"}]}]
    write_jsonl(tmp_path / "a.jsonl", rows[:2])
    write_jsonl(tmp_path / "b.jsonl", rows[2:])
    spec = "spec:\n  system_prompt: You review Python code.\n"
    _, run_dir = run_data(project(tmp_path, "  eval_fraction: 0\n  sources: [{path: a.jsonl}, {path: b.jsonl}]\n", spec))
    firsts = [r["messages"][0]["content"] for r in read_jsonl(run_dir / "train.jsonl")]
    assert sorted(firsts) == ["Own system.", "You review Python code.", "You review Python code."]


def test_benchmarks_of_eval_suites_are_decontamination_targets(tmp_path: Path) -> None:
    from adhere.eval.ifeval.suite import BUILTIN_SUITE

    ifeval_prompt = json.loads(BUILTIN_SUITE.read_text().splitlines()[0])["prompt"]
    custom_prompt = "Summarise the quarterly sales report of the northern region in exactly three bullet points for the board."
    write_jsonl(tmp_path / "custom.jsonl", [{"id": "c1", "prompt": custom_prompt, "constraints": [{"id": "num_bullets", "n": 3}]}])
    rows = alpaca_rows(10) + [{"instruction": ifeval_prompt, "output": "Copied from IFEval."},
                              {"instruction": custom_prompt, "output": "Copied from the acceptance prompts."}]
    write_jsonl(tmp_path / "t.jsonl", rows)
    path = project(tmp_path, "  eval_fraction: 0\n  sources: [{path: t.jsonl}]\n", max_length=4096)
    stats, _ = run_data(path)  # only the held-out suite: nothing else is evaluated, so both copies train
    assert stats["train"] == 12

    stats, run_dir = run_data(path, "eval.suites=[held_out, ifeval, custom]", "eval.custom_file=custom.jsonl")
    rejected = {r["location"]: r for r in read_jsonl(run_dir / "rejected.jsonl")}
    assert set(rejected) == {"line 11", "line 12"} and {r["rule"] for r in rejected.values()} == {"contaminated"}
    assert "input_data.jsonl line 1 (eval.ifeval_file)" in rejected["line 11"]["reason"]
    assert "custom.jsonl line 1 (eval.custom_file)" in rejected["line 12"]["reason"]
    assert stats["train"] == 10 and stats["curation_dropped"]["decontam"] == 2
    assert [(t["key"], t["prompts"]) for t in stats["decontam_targets"]] == [("eval.ifeval_file", 541), ("eval.custom_file", 1)]
    card = (run_dir / "card.md").read_text()
    assert "## Decontamination" in card and "| eval.ifeval_file | input_data.jsonl | 541 |" in card
    # eval.ifeval_file replaces the shipped prompts as the target
    write_jsonl(tmp_path / "my_ifeval.jsonl", [{"key": 1, "prompt": "An unrelated prompt of our own.", "kwargs": [{}],
                                               "instruction_id_list": ["punctuation:no_comma"]}])
    stats, _ = run_data(path, "eval.suites=[ifeval]", "eval.ifeval_file=my_ifeval.jsonl")
    assert stats["train"] == 12 and stats["decontam_targets"][0]["path"] == str(tmp_path / "my_ifeval.jsonl")


def test_validation_split_is_carved_out_of_the_training_rows(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", alpaca_rows(40))
    path = project(tmp_path, "  eval_fraction: 0.25\n  sources: [{path: a.jsonl}]\n")
    stats, run_dir = run_data(path, "train.eval_every=5")  # auto: 5% of the 30 training rows
    train, valid, evals = (read_jsonl(run_dir / f"{name}.jsonl") for name in ("train", "valid", "eval"))
    assert (stats["train"], stats["valid"], stats["eval"]) == (28, 2, 10) == (len(train), len(valid), len(evals))
    assert stats["rows_in"] == stats["train"] + stats["valid"] + stats["eval"] + stats["rejected"]
    assert stats["kept"] == 40 and stats["sources"][str(tmp_path / "a.jsonl")]["kept"] == 40
    prompts = lambda records: {r["messages"][0]["content"] for r in records}  # noqa: E731
    assert not prompts(valid) & prompts(train) and not prompts(valid) & prompts(evals)
    assert set(valid[0]) == {"messages", "meta"} and valid[0]["meta"]["format"] == "alpaca"  # the canonical record
    assert "tokens" in valid[0]["meta"]  # taken after the token checks, like the training rows
    assert "40 rows in: 28 train, 2 validation, 10 eval, 0 rejected" in (run_dir / "card.md").read_text()
    first = (run_dir / "valid.jsonl").read_text()
    assert run_data(path, "train.eval_every=5")[1].joinpath("valid.jsonl").read_text() == first  # seeded
    assert run_data(path, "train.eval_every=5", "data.seed=3")[1].joinpath("valid.jsonl").read_text() != first

    stats, run_dir = run_data(path, "data.validation_fraction=0.5")  # explicit: needs no eval_every
    assert (stats["train"], stats["valid"]) == (15, 15)
    stats, run_dir = run_data(path)  # no eval_every: no split, and the stale valid.jsonl is gone
    assert stats["valid"] == 0 and stats["train"] == 30 and not (run_dir / "valid.jsonl").exists()
    assert "No validation split" in (run_dir / "card.md").read_text()

    # at least one row from two training rows; none from one
    write_jsonl(tmp_path / "a.jsonl", alpaca_rows(2))
    stats, _ = run_data(path, "train.eval_every=5", "data.eval_fraction=0")
    assert (stats["train"], stats["valid"]) == (1, 1)
    write_jsonl(tmp_path / "a.jsonl", alpaca_rows(1))
    stats, run_dir = run_data(path, "train.eval_every=5", "data.eval_fraction=0")
    assert (stats["train"], stats["valid"]) == (1, 0) and not (run_dir / "valid.jsonl").exists()
