"""`adhere eval` end to end on a tiny model: base vs tuned vs an endpoint, every suite, skips accounted for, cache."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

import adhere.eval
import adhere.train
from adhere.cli import app
from adhere.config import load_config

SCHEMA = {"type": "object", "required": ["verdict"], "properties": {"verdict": {"enum": ["approve", "reject"]}}}
QUESTIONS = ["Review: x = 1", "Review: eval(input())", "Review: import os", "Review: print(1)"]
ANSWERS = ['{"verdict": "approve"}', '{"verdict": "reject"}', '{"verdict": "approve"}', '{"verdict": "approve"}']


class Endpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible stub: a judge that grades 4 and prefers answers starting with '{', and an
    'api' model that answers in JSON but fails with HTTP 500 on prompts about eval()."""

    def answer(self, model: str, text: str) -> str | None:
        """The reply to the last user message `text`; None for an HTTP 500."""
        if model == "api" and "eval(" in text:
            return None
        if model == "judge" and "[Response A]" in text:
            a = text.split("[Response A]\n", 1)[1].startswith("{")
            b = text.split("[Response B]\n", 1)[1].startswith("{")
            return "[[C]]" if a == b else ("[[A]]" if a else "[[B]]")
        if model == "judge":
            return "no idea" if "import os" in text else "instruction_following: 4\nFine."
        return '{"verdict": "approve"}'

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = self.answer(body["model"], body["messages"][-1]["content"])
        if answer is None:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "model crashed"}}')
            return
        reply = {"id": "x", "object": "chat.completion", "model": body["model"],
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class Echo(Endpoint):
    """A stub model whose answer names the question: 'Answer to <last user message>'."""

    def answer(self, model: str, text: str) -> str | None:
        return f"Answer to {text}"


def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture
def endpoint() -> Iterator[str]:
    yield from serve(Endpoint)


@pytest.fixture
def echo() -> Iterator[str]:
    yield from serve(Echo)


def make_project(tmp_path: Path, tiny_dir: Path, url: str) -> Path:
    data = tmp_path / "runs" / "p" / "data"
    data.mkdir(parents=True)
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "meta": {"id": f"r{i}"}}
            for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS))]
    for split in ("train", "eval"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "ifeval.jsonl").write_text(
        json.dumps({"key": 1, "prompt": "Say hi in lowercase.", "instruction_id_list": ["change_case:english_lowercase"],
                    "kwargs": [{}]}) + "\n"
        + json.dumps({"key": 2, "prompt": "Answer with no commas, at least 2 words.",
                      "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
                      "kwargs": [{}, {"num_words": 2, "relation": "at least"}]}) + "\n"
        + json.dumps({"key": 3, "prompt": "x", "instruction_id_list": ["made_up:thing"], "kwargs": [{}]}) + "\n"
    )
    (tmp_path / "custom.jsonl").write_text(
        json.dumps({"id": "c1", "prompt": "Review: y = 2", "constraints": [{"id": "max_words", "n": 50}]}) + "\n"
        + json.dumps({"id": "c2", "prompt": "Review: z", "constraints": [{"id": "max_wordz", "n": 5}]}) + "\n"
        + "{not json\n"
    )
    config = {
        "name": "p",
        "spec": {"task": "code_review", "output": {"format": "json", "schema": SCHEMA},
                 "constraints": [{"id": "json_schema"}, {"id": "max_words", "n": 40}]},
        "model": {"base": str(tiny_dir)},
        "train": {"max_steps": 2, "batch_size": 2, "lr": 0.01, "lora": {"r": 4, "alpha": 8}},
        "eval": {
            "models": ["base", "tuned", {"name": "api", "kind": "endpoint", "endpoint": {"base_url": url, "model": "api",
                                                                                     "max_tries": 1}}],
            "suites": ["held_out", "ifeval", "custom", "judge"],
            "ifeval_file": "ifeval.jsonl", "custom_file": "custom.jsonl",
            "max_new_tokens": 6, "batch_size": 4, "bootstrap_resamples": 200, "list_key": ["line", "rule"],
            "item_f1": {"finding": {"list": "issues", "key": ["line"]}}, "rouge_fields": ["verdict"],
            "judge": {"model": {"name": "judge", "kind": "endpoint", "endpoint": {"base_url": url, "model": "judge"}}},
        },
    }
    path = tmp_path / "adhere.yaml"
    path.write_text(json.dumps(config))
    return path


def test_eval_end_to_end(tmp_path: Path, tiny_dir: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(make_project(tmp_path, tiny_dir, endpoint))
    adhere.train.run(config)
    messages: list[str] = []
    run_dir = adhere.eval.run(config, log=messages.append)
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["models"]) == ["base", "tuned", "api"] and results["baseline"] == "base"
    assert list(results["suites"]) == ["held_out", "ifeval", "custom", "judge"]

    held = results["suites"]["held_out"]
    # the endpoint failed on one prompt: skipped with its reason, the others scored for every model
    assert held["counts"]["prompts"] == 4 and held["counts"]["scored"] == 3
    assert [(reason.startswith("api: HTTP 500"), n) for reason, n in held["counts"]["skipped"].items()] == [(True, 1)]
    assert {"all_constraints", "json_parse", "json_schema_valid", "field_f1", "finding_f1", "rouge_l_verdict", "rouge_l",
            "exact_match"} <= set(held["metrics"])
    assert held["metrics"]["rouge_l_verdict"]["models"]["api"]["value"] == 1.0  # "approve" is right where it answered
    api = held["metrics"]["json_schema_valid"]["models"]["api"]
    assert api["value"] == 1.0 and api["n"] == 3  # the stub always answers valid JSON
    comparison = held["metrics"]["json_schema_valid"]["comparisons"][1]
    assert comparison["model"] == "api" and comparison["test"] == "McNemar (exact)" and comparison["n"] == 3
    assert set(held["breakdown"]["rows"]) == {"json_schema", "max_words(n=40)"}

    ifeval = results["suites"]["ifeval"]
    assert set(ifeval["metrics"]) == {"prompt_strict", "instruction_strict", "prompt_loose", "instruction_loose"}
    assert ifeval["counts"]["prompts"] == 3 and ifeval["counts"]["scored"] == 2
    assert any("made_up:thing" in reason for reason in ifeval["counts"]["skipped"])
    assert ifeval["metrics"]["instruction_strict"]["models"]["base"]["n"] == 3  # instructions, not prompts

    custom = results["suites"]["custom"]
    assert custom["counts"]["scored"] == 1 and sum(custom["counts"]["skipped"].values()) == 2
    assert any("max_wordz" in r and "did you mean 'max_words'" in r for r in custom["counts"]["skipped"])

    judged = results["suites"]["judge"]
    assert judged["pairwise"]["model"] == "tuned" and len(judged["all_pairwise"]) == 2
    assert judged["unparseable_scores"]["base"] == 1  # the judge's "no idea" is counted, not dropped
    assert judged["metrics"]["score"]["models"]["api"]["value"] == 4.0
    api_wins = judged["metrics"]["win_rate_api"]["models"]["api"]
    assert 0 <= api_wins["value"] <= 1

    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * (4 + 2 + 1 + 4)  # models x prompts of each suite
    failed = [s for s in samples if s["finish_reason"] == "error"]
    assert len(failed) == 2 and all("HTTP 500" in s["error"] for s in failed)  # held_out and judge share answers
    strict = [json.loads(line) for line in (run_dir / "ifeval" / "tuned.strict.jsonl").read_text().splitlines()]
    assert [set(line) for line in strict] == [{"prompt", "response", "instruction_id_list", "follow_all_instructions",
                                               "follow_instruction_list"}] * 2
    assert (run_dir / "report.html").stat().st_size > 1000
    assert any("skipped" in m and "made_up:thing" in m for m in messages)

    # a re-run regenerates nothing: every local answer comes from the cache
    from adhere.generation import LocalBackend

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(LocalBackend, "generate_ids", no_generation)
    again = json.loads((adhere.eval.run(config) / "results.json").read_text())
    assert again["suites"]["held_out"]["metrics"] == held["metrics"]


def test_cli_prints_metrics_and_refuses_a_missing_tuned_model(tmp_path: Path, tiny_dir: Path, endpoint: str) -> None:
    path = make_project(tmp_path, tiny_dir, endpoint)
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(path), "--set", "eval.suites=[held_out]"])
    assert result.exit_code != 0 and "run `adhere train p` first" in str(result.exception)
    result = runner.invoke(app, ["eval", str(path), "--set", "eval.suites=[ifeval]", "--set", "eval.models=[base]"])
    assert result.exit_code == 0, result.output
    assert "Prompt-level accuracy (strict)" in result.output and "2 of 3 prompts scored" in result.output


@pytest.mark.parametrize(("eval_yaml", "message"), [
    ("{suites: [custom]}", "eval.custom_file"),
    ("{suites: [judge]}", "eval.judge.model"),
    ("{models: [base, base]}", "model name 'base' is used twice"),
    ("{models: [bse]}", "unknown model 'bse'"),
    ("{models: [{name: x, kind: folder}]}", "kind 'folder' needs a path"),
    ("{models: [{name: x, kind: endpoint}]}", "kind 'endpoint' needs endpoint"),
    ("{item_f1: {rule: {list: suggestions, key: []}}}", "name at least one field"),
])
def test_eval_config_errors_name_the_key(tmp_path: Path, eval_yaml: str, message: str) -> None:
    from adhere.errors import UserError

    path = tmp_path / "adhere.yaml"
    path.write_text(f"name: p\neval: {eval_yaml}\n")
    with pytest.raises(UserError, match=re.escape(message)):
        load_config(path)


def test_repeated_held_out_ids_keep_every_prompt_with_its_own_answer(tmp_path: Path, echo: str) -> None:
    # Issue 14, defect 10: answers were keyed by meta.id, so a repeated id paired a prompt with another's
    # answer and dropped one silently. meta.id comes from the source rows as given; two sources repeat it.
    data = tmp_path / "runs" / "p" / "data"
    data.mkdir(parents=True)
    ids = ["a", "b", "a", None, "a#2"]
    rows = [{"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"Answer to Q{i}"}],
             "meta": {"id": item_id} if item_id else {}} for i, item_id in enumerate(ids)]
    (data / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    api = {"name": "api", "kind": "endpoint", "endpoint": {"base_url": echo, "model": "api", "max_tries": 1}}
    (tmp_path / "adhere.yaml").write_text(json.dumps({"name": "p", "eval": {"models": [api], "suites": ["held_out"]}}))
    messages: list[str] = []
    run_dir = adhere.eval.run(load_config(tmp_path / "adhere.yaml"), log=messages.append)

    held = json.loads((run_dir / "results.json").read_text())["suites"]["held_out"]
    assert held["counts"] == {"prompts": 5, "scored": 5, "skipped": {}}
    assert held["metrics"]["exact_match"]["models"]["api"] == {"value": 1.0, "ci": [1.0, 1.0], "n": 5}
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [s["id"] for s in samples] == ["a", "b", "a#3", "eval-4", "a#2"]  # 'a#2' is taken by line 5
    assert all(s["response"] == s["reference"] == f"Answer to {s['prompt']}" for s in samples)
    eval_file = data / "eval.jsonl"
    assert f"note {eval_file}:3: id 'a' is also on line 1; scored as 'a#3'" in messages


def test_a_repeated_custom_id_is_skipped_naming_both_lines(tmp_path: Path) -> None:
    from adhere.eval.suites import load

    lines = [{"id": "c1", "prompt": "Review: x"}, {"id": "c2", "prompt": "Review: y"}, {"id": "c1", "prompt": "Review: z"}]
    (tmp_path / "custom.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "adhere.yaml").write_text("name: p\neval: {suites: [custom], custom_file: custom.jsonl}\n")
    suite = load("custom", load_config(tmp_path / "adhere.yaml"))
    assert [item.prompt for item in suite.items] == ["Review: x", "Review: y"]
    assert suite.problems == [(f"{tmp_path / 'custom.jsonl'}:3",
                               "id 'c1' is already used on line 1; give each prompt its own id")]
