"""Preference pairs: every pair format converts, every rejection has its reason, counts reconcile, the card
shows them, an all-rejected pair file is exit 2, and feedback exports pairs that load back through data.pairs."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_data import alpaca_rows, project, read_jsonl, run_data, write_jsonl

from adhere.config import load_config
from adhere.data.pair_formats import detect_pair_format, from_pair, from_pair_columns, from_trl
from adhere.data.records import Rejection
from adhere.errors import UserError

U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731
S = lambda text: {"role": "system", "content": text}  # noqa: E731


@pytest.fixture(autouse=True)
def _tiny_model(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADHERE_TEST_MODEL", str(tiny_dir))


def good_pairs(n: int) -> list[dict[str, Any]]:
    """TRL string pairs with distinct prompts (none shares 13 words with another: decontamination stays quiet)."""
    topics = ["rivers", "volcanoes", "planets", "bridges", "forests", "deserts", "glaciers", "islands", "canyons", "reefs"]
    return [{"prompt": f"Name one fact about {topics[i % 10]} number {i}.",
             "chosen": f"Fact {i}: {topics[i % 10]} are studied by scientists.", "rejected": f"I do not know {i}."}
            for i in range(n)]


def test_each_pair_format_converts() -> None:
    assert from_trl({"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}) == ([U("Hi?")], A("Hello."), A("Go away."))
    # message lists with an explicit prompt (TRL conversational)
    row = {"prompt": [S("Be kind."), U("Hi?")], "chosen": [A("Hello.")], "rejected": [A("No.")]}
    assert from_trl(row) == ([S("Be kind."), U("Hi?")], A("Hello."), A("No."))
    # implicit prompt: whole conversations sharing their prompt turns, multi-turn
    chat = [U("Hi?"), A("Hello."), U("And you?")]
    assert from_trl({"chosen": [*chat, A("Fine.")], "rejected": [*chat, A("Meh.")]}) == (chat, A("Fine."), A("Meh."))
    # UltraFeedback: the prompt string again, and whole conversations
    uf = {"prompt": "Hi?", "chosen": [U("Hi?"), A("Hello.")], "rejected": [U("Hi?"), A("No.")], "score_chosen": 8.0}
    assert from_trl(uf) == ([U("Hi?")], A("Hello."), A("No."))
    assert from_pair({"messages": [U("Hi?")], "chosen": A("Hello."), "rejected": A("No.")}) == ([U("Hi?")], A("Hello."), A("No."))
    columns = from_pair_columns({"prompt": "q", "chosen": "good", "rejected": "bad", "system": "sys"})
    assert columns({"q": "Hi?", "good": "Hello.", "bad": "No.", "sys": "Be kind."}) == ([S("Be kind."), U("Hi?")], A("Hello."), A("No."))
    assert detect_pair_format({"messages": [], "chosen": {}, "rejected": {}}) == "pair"
    assert detect_pair_format(uf) == "trl" and detect_pair_format({"prompt": "x", "completion": "y"}) is None
    # a prompt the two sides do not share
    with pytest.raises(Rejection) as caught:
        from_trl({"chosen": [U("Hi?"), A("Hello.")], "rejected": [U("Bye?"), A("No.")]})
    assert caught.value.rule == "prompt_mismatch" and "turn 0" in caught.value.reason
    with pytest.raises(Rejection, match="does not start with the prompt"):
        from_trl({"prompt": "Hi?", "chosen": [U("Other?"), A("Hello.")], "rejected": "No."})
    with pytest.raises(Rejection, match="missing field 'prompt'"):
        from_trl({"chosen": "Hello.", "rejected": "No."})


def test_pairs_are_checked_deduplicated_decontaminated_and_reconciled(tmp_path: Path) -> None:
    bench = "Summarize the history of the printing press in Europe from Gutenberg to the industrial age please."
    write_jsonl(tmp_path / "bench.jsonl", [{"prompt": bench}])
    write_jsonl(tmp_path / "rows.jsonl", alpaca_rows(6))
    pairs = good_pairs(12)
    bad = [
        {"prompt": "Name a river.", "chosen": "  ", "rejected": "No."},  # line 13
        {"prompt": "Name a lake.", "chosen": "Lake Baikal.", "rejected": "Lake  Baikal."},  # line 14
        {"chosen": [U("Name a sea."), A("The Baltic.")], "rejected": [U("Name an ocean."), A("No.")]},  # line 15
        {"prompt": "Tell a long story.", "chosen": "river " * 300, "rejected": "No."},  # line 16
        dict(pairs[0]),  # line 17: an exact duplicate of line 1
        {"prompt": f"Please {bench.lower()}", "chosen": "It spread fast.", "rejected": "No."},  # line 18
        {"question": "x", "answer": "y"},  # line 19 (the format is detected from line 1)
        {"prompt": "Write to the customer.", "chosen": "Write to ana.silva@example.com today.", "rejected": "No."},
        "not json",  # line 21
    ]
    write_jsonl(tmp_path / "prefs.jsonl", pairs + bad)
    path = project(tmp_path, "  eval_fraction: 0\n  sources: [{path: rows.jsonl}]\n  pairs: [{path: prefs.jsonl}]\n"
                   "  decontam: {targets: [bench.jsonl]}\n", max_length=200)
    stats, run_dir = run_data(path, "data.validation_fraction=0.25")
    rejected = {r["location"]: r for r in read_jsonl(run_dir / "rejected.jsonl") if r.get("kind") == "pair"}
    rules = {where: r["rule"] for where, r in rejected.items()}
    assert rules == {"line 13": "empty_side", "line 14": "identical_sides", "line 15": "prompt_mismatch",
                     "line 16": "too_many_tokens", "line 17": "exact_duplicate", "line 18": "contaminated",
                     "line 19": "missing_field", "line 21": "malformed_json"}
    assert "the chosen side: " in rejected["line 16"]["reason"] and "train.max_length=200" in rejected["line 16"]["reason"]
    assert "prefs.jsonl line 1" in rejected["line 17"]["reason"] and "bench.jsonl line 1" in rejected["line 18"]["reason"]
    assert rejected["line 14"]["row"] == {"prompt": "Name a lake.", "chosen": "Lake Baikal.", "rejected": "Lake  Baikal."}

    counts = stats["pairs"]
    assert (counts["rows_in"], counts["rejected"], counts["train"] + counts["valid"]) == (21, 8, 13)
    assert counts["valid"] == 3 and counts["rejected_by_rule"]["too_many_tokens"] == 1  # 25% of 13 prompts
    assert counts["pii"]["flagged_rows"] == 1 and stats["rows_in"] == 6 == stats["kept"]  # the rows are untouched
    train, valid = read_jsonl(run_dir / "pairs.jsonl"), read_jsonl(run_dir / "pairs_valid.jsonl")
    assert len(train) == counts["train"] and len(valid) == 3
    assert not {json.dumps(p["messages"]) for p in train} & {json.dumps(p["messages"]) for p in valid}
    first = train[0] if train[0]["meta"]["row"] == "line 1" else valid[0]
    assert set(first) == {"messages", "chosen", "rejected", "meta"} and first["messages"] == [U("Name one fact about rivers number 0.")]
    assert first["chosen"] == A("Fact 0: rivers are studied by scientists.") and first["rejected"] == A("I do not know 0.")
    assert first["meta"]["format"] == "trl" and len(first["meta"]["id"]) == 16 and first["meta"]["chosen_trained_tokens"] > 0

    card = (run_dir / "card.md").read_text()
    assert "## Pairs" in card and "21 preference pairs in:" in card and "| identical_sides | 1 |" in card
    from adhere.data.stage import pair_files

    assert pair_files(load_config(path, ["data.validation_fraction=0.25"])) == {
        "pairs": run_dir / "pairs.jsonl", "pairs_valid": run_dir / "pairs_valid.jsonl"}


def test_no_trained_tokens_on_a_side_is_a_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    from adhere.data import pairs as pairs_module
    from adhere.models import masking

    real = masking.render

    def render(tokenizer: Any, messages: list[dict[str, Any]], **kwargs: Any) -> Any:  # a template that drops "No."
        rendered = real(tokenizer, messages, **kwargs)
        if messages[-1]["content"] == "No.":
            return dataclasses.replace(rendered, labels=[masking.IGNORE_INDEX] * len(rendered.labels))
        return rendered

    monkeypatch.setattr(masking, "render", render)
    from tiny import build_tiny_tokenizer

    pair = {"messages": [U("Hi?")], "chosen": A("Hello."), "rejected": A("No."), "meta": {}}
    kept, dropped = pairs_module.pair_token_filter([pair], build_tiny_tokenizer(), 100, "tiny")
    assert not kept and dropped[0][1] == Rejection("no_trained_tokens", "the rejected side: no token would be trained "
                                                                           "after loss masking")


def test_without_pairs_the_data_section_and_outputs_are_unchanged(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "rows.jsonl", alpaca_rows(6))
    path = project(tmp_path, "  sources: [{path: rows.jsonl}]\n")
    config = load_config(path)
    assert "pairs" not in config.model_dump(mode="json")["data"] and "pairs:" not in config.to_yaml()
    write_jsonl(tmp_path / "prefs.jsonl", good_pairs(3))
    _, run_dir = run_data(path, "data.pairs=[{path: prefs.jsonl}]")
    assert (run_dir / "pairs.jsonl").is_file() and not (run_dir / "pairs_valid.jsonl").exists()  # 3 < a handful
    write_jsonl(tmp_path / "prefs.jsonl", good_pairs(8))
    _, run_dir = run_data(path, "data.pairs=[{path: prefs.jsonl}]")
    assert not (run_dir / "pairs_valid.jsonl").exists()  # nothing evaluates held-out pairs: auto holds none out
    path.write_text(path.read_text() + "dpo: {eval_every: 2}\n")  # DPO evaluates: auto holds some out, as rows'
    _, run_dir = run_data(path, "data.pairs=[{path: prefs.jsonl}]")
    assert len(read_jsonl(run_dir / "pairs_valid.jsonl")) == 1 and len(read_jsonl(run_dir / "pairs.jsonl")) == 7
    write_jsonl(tmp_path / "prefs.jsonl", good_pairs(3))
    _, run_dir = run_data(path, "data.sources=[{path: rows.jsonl}, {path: prefs.jsonl}]")  # pairs among the rows
    assert "list the file under data.pairs" in read_jsonl(run_dir / "rejected.jsonl")[0]["reason"]
    stats, run_dir = run_data(path)  # pairs removed again: no pair file left behind, nothing about pairs
    assert not (run_dir / "pairs.jsonl").exists() and "pairs" not in stats and "## Pairs" not in (run_dir / "card.md").read_text()
    from adhere.data.stage import pair_files

    assert pair_files(config) == {}


def test_pair_formats_belong_in_data_pairs_and_row_formats_in_data_sources(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"data\.sources\[0\]\.format: 'trl' reads preference pairs.*data\.pairs"):
        load_config(project(tmp_path, "  sources: [{path: a.jsonl, format: trl}]\n"))
    with pytest.raises(UserError, match=r"data\.pairs\[0\]\.format: 'alpaca' reads instruction rows.*data\.sources"):
        load_config(project(tmp_path, "  sources: [{path: a.jsonl}]\n  pairs: [{path: b.jsonl, format: alpaca}]\n"))
    with pytest.raises(UserError, match=r"data\.sources\[0\]\.columns: 'columns' reads preference pairs"):
        load_config(project(tmp_path, "  sources: [{path: a.jsonl, columns: {prompt: q, chosen: a, rejected: b}}]\n"))
    with pytest.raises(UserError, match=r"data\.pairs\[0\]\.columns: .*needs at least"):
        load_config(project(tmp_path, "  sources: [{path: a.jsonl}]\n  pairs: [{path: b.jsonl, columns: {chosen: a, rejected: b}}]\n"))


def test_a_pair_file_with_every_row_rejected_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from test_cli import run_cli

    write_jsonl(tmp_path / "rows.jsonl", alpaca_rows(4))
    write_jsonl(tmp_path / "same.csv", [])
    (tmp_path / "same.csv").write_text("q,good,bad\nHi?,Hello.,Hello.\nBye?,See you.,See you.\nYo?,,Hey.\n")
    path = project(tmp_path, "  sources: [{path: rows.jsonl}]\n  pairs: [{path: same.csv, columns: {prompt: q, chosen: good, rejected: bad}}]\n")
    code, _, err = run_cli(capsys, monkeypatch, "data", str(path))
    assert code == 2 and "Traceback" not in err
    message = " ".join(err.split())
    assert f"{tmp_path / 'same.csv'}: all 3 pairs were rejected (data.pairs), most for 'identical_sides' (2 of them;" in message


# ---- feedback export --------------------------------------------------------------------------------


def monitor_db(folder: Path, requests: list[tuple[str, str, str | None]], feedback: list[tuple[str, str, str | None]]) -> None:
    """A monitor.db with requests (id, question, answer; None: a failed request) and feedback (id, rating, correction)."""
    from adhere.serve.monitor import SCHEMA

    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(folder / "monitor.db")
    conn.executescript(SCHEMA)
    for i, (rid, question, answer) in enumerate(requests):
        conn.execute("INSERT INTO requests (id, created, model, run_id, status, stream, messages, response, latency_s, "
                     "prompt_tokens, completion_tokens, checks, params) VALUES (?, ?, 'p', 'run-1', ?, 0, ?, ?, 0.1, 1, 1, "
                     "'[]', '{}')", (rid, 1000.0 + i, 200 if answer else 500, json.dumps([U(question)]), answer))
    for i, (rid, rating, correction) in enumerate(feedback):
        score = {"up": 5, "down": 1}[rating]
        conn.execute("INSERT INTO feedback (created, completion_id, rating, score, correction) VALUES (?, ?, ?, ?, ?)",
                     (2000.0 + i, rid, rating, score, correction))
    conn.commit()
    conn.close()


def test_feedback_export_writes_pairs_that_load_back_through_data_pairs(tmp_path: Path) -> None:
    from adhere.serve.feedback import export_feedback

    monitor_db(tmp_path / "runs" / "p" / "serve", [
        ("c1", "Name a river.", "The Nile."), ("c2", "Name a river.", "A mountain."), ("c3", "Name a river.", "Rome."),
        ("c4", "Name a planet.", "The Moon."), ("c5", "Name a lake.", "A car."), ("c6", "Name a sea.", None),
    ], [("c1", "up", None), ("c2", "down", None), ("c3", "down", "The Amazon."), ("c4", "down", "Mars."),
        ("c5", "down", None), ("c6", "down", "The Baltic.")])
    write_jsonl(tmp_path / "rows.jsonl", alpaca_rows(4))
    path = project(tmp_path, "  sources: [{path: rows.jsonl}]\n  pairs: [{path: pairs.jsonl}]\n")
    config = load_config(path)
    export_feedback(config, tmp_path / "next.jsonl", tmp_path / "pairs.jsonl")
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    got = [(p["messages"][-1]["content"], p["chosen"]["content"], p["rejected"]["content"], p["meta"]["kind"]) for p in pairs]
    assert got == [  # a correction over what it corrects; a rejected answer against each approved one (up, or corrected)
        ("Name a river.", "The Amazon.", "Rome.", "correction"), ("Name a planet.", "Mars.", "The Moon.", "correction"),
        ("Name a river.", "The Nile.", "A mountain.", "approved_over_rejected"),
        ("Name a river.", "The Amazon.", "A mountain.", "approved_over_rejected")]
    meta = pairs[2]["meta"]
    assert meta["id"] == "feedback-1-over-2" and meta["origin"] == "feedback" and meta["run_id"] == "run-1"
    assert meta["chosen_from"] == {"request_id": "c1", "feedback_id": 1, "rating": "up", "score": 5, "kind": "approved"}
    assert meta["rejected_from"]["request_id"] == "c2" and pairs[0]["meta"]["id"] == "feedback-3"
    summary = json.loads((tmp_path / "next.summary.json").read_text())
    assert summary["pairs"] == 4 and summary["pair_counts"] == {"approved_over_rejected": 2, "correction": 2}

    stats, run_dir = run_data(path)  # back through data.pairs, format auto
    kept = read_jsonl(run_dir / "pairs.jsonl")
    assert stats["pairs"]["train"] == 4 and stats["pairs"]["rejected"] == 0
    assert [p["meta"]["id"] for p in kept] == [p["meta"]["id"] for p in pairs]
    assert all(p["meta"]["format"] == "pair" and p["meta"]["source"] == str(tmp_path / "pairs.jsonl") for p in kept)
    assert [p["chosen"] for p in kept] == [p["chosen"] for p in pairs]
