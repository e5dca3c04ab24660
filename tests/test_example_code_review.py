"""The bundled code-review example (examples/code_review/): generator, committed data, schema, config.

    .venv/bin/python -m pytest tests/test_example_code_review.py -q -m "not embedded"   # a few seconds

Tests that run ruff skip when it is not installed (it is a dev tool the generator needs, adhere does not).
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "code_review"
sys.path.insert(0, str(EXAMPLE))

import checklist
import generate
import snippets
import templates_eval
import templates_train
from snippets import Line

HAS_RUFF = importlib.util.find_spec("ruff") is not None or shutil.which("ruff") is not None
needs_ruff = pytest.mark.skipif(not HAS_RUFF, reason="ruff is not installed (pip install ruff): the cross-check needs it")


def _records(split: str) -> list[dict]:
    return [json.loads(line) for line in (EXAMPLE / "data" / f"{split}.jsonl").read_text().splitlines()]


TRAIN, EVAL = _records("train"), _records("eval")
ALL = TRAIN + EVAL


def _lines(text: str) -> list[Line]:
    return [Line(t) for t in text.strip("\n").splitlines()]


# ------------------------------------------------------------------ generation


def test_generation_is_deterministic_for_a_seed() -> None:
    first = generate.build(seed=3, n_train=12, n_eval=6, check_lint=False)
    again = generate.build(seed=3, n_train=12, n_eval=6, check_lint=False)
    other = generate.build(seed=4, n_train=12, n_eval=6, check_lint=False)
    assert first["train"] == again["train"] and first["eval"] == again["eval"]
    assert [r["messages"] for r in first["train"]] != [r["messages"] for r in other["train"]]
    assert (len(first["train"]), len(first["eval"])) == (12, 6)


@needs_ruff
def test_committed_data_is_the_seed_0_generation() -> None:
    built = generate.build(seed=0)
    assert built["train"] == TRAIN
    assert built["eval"] == EVAL


def test_counts_and_disjoint_templates() -> None:
    assert (len(TRAIN), len(EVAL)) == (200, 50)
    train_ids = {t.id for t in templates_train.TEMPLATES}
    eval_ids = {t.id for t in templates_eval.TEMPLATES}
    assert not train_ids & eval_ids
    assert not {t.text for t in templates_train.TEMPLATES} & {t.text for t in templates_eval.TEMPLATES}
    assert {r["meta"]["template"] for r in TRAIN} == train_ids
    assert {r["meta"]["template"] for r in EVAL} == eval_ids


def test_every_rule_is_planted_in_both_splits() -> None:
    for records, least in ((TRAIN, 15), (EVAL, 4)):
        counts = {rule: 0 for rule in checklist.RULE_IDS}
        for record in records:
            for finding in record["meta"]["planted"]:
                counts[finding["rule"]] += 1
        assert min(counts.values()) >= least, counts


# ------------------------------------------------------------------ the records


def test_every_record_is_valid_canonical_chat() -> None:
    from adhere.data.records import check_messages

    for record in ALL:
        messages = check_messages(record["messages"])
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[0]["content"] == messages[0]["content"].strip()
        assert set(record["meta"]) == {"id", "template", "kind", "planted", "limit", "ignored"}


def test_every_reference_validates_against_the_schema() -> None:
    import jsonschema

    schema = json.loads((EXAMPLE / "review.schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    validator.check_schema(schema)
    assert schema["properties"]["suggestions"]["items"]["properties"]["rule"]["enum"] == list(checklist.RULE_IDS)
    for record in ALL:
        validator.validate(json.loads(record["messages"][1]["content"]))


def test_snippets_are_10_to_40_lines() -> None:
    sizes = [len(generate.snippet_from_prompt(r["messages"][0]["content"]).splitlines()) for r in ALL]
    assert 10 <= min(sizes) and max(sizes) <= 40


def test_suggestions_are_sorted_and_point_at_their_lines() -> None:
    for record in ALL:
        lines = generate.snippet_from_prompt(record["messages"][0]["content"]).splitlines()
        review = json.loads(record["messages"][1]["content"])
        numbers = [s["line"] for s in review["suggestions"]]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), record["meta"]["id"]
        for suggestion in review["suggestions"]:
            assert checklist.line_shows(suggestion["rule"], lines[suggestion["line"] - 1]), (record["meta"]["id"], suggestion)


def test_references_respect_limits_and_ignored_rules() -> None:
    for record in ALL:
        meta, review = record["meta"], json.loads(record["messages"][1]["content"])
        kept = [(p["line"], p["rule"]) for p in meta["planted"] if p["rule"] not in meta["ignored"]]
        expected = kept[: meta["limit"]] if meta["limit"] else kept
        assert [(s["line"], s["rule"]) for s in review["suggestions"]] == expected
        assert review["summary"] == checklist.summary([rule for _, rule in expected], len(kept))
    assert any(r["meta"]["limit"] for r in TRAIN) and any(r["meta"]["ignored"] for r in TRAIN)


def test_prompt_numbering_round_trips() -> None:
    text = "import os\n\n\ndef f():\n    return os.sep"
    shown = generate.numbered(text)
    assert shown.splitlines()[:3] == [" 1| import os", " 2|", " 3|"]
    assert generate.snippet_from_prompt(f"Review.\n\n```python\n{shown}\n```") == text


# ------------------------------------------------------------------ the linter cross-check


@needs_ruff
def test_ruff_sees_exactly_the_planted_findings_on_a_sample() -> None:
    sample = TRAIN[::5] + EVAL[::2]  # 40 + 25 snippets, one ruff run
    found = generate.lint([generate.snippet_from_prompt(r["messages"][0]["content"]) for r in sample])
    for record, seen in zip(sample, found):
        assert seen == {(p["line"], p["rule"]) for p in record["meta"]["planted"]}, record["meta"]["id"]


@needs_ruff
def test_every_template_renders_clean() -> None:
    rng = random.Random(0)
    texts = []
    for template in templates_train.TEMPLATES + templates_eval.TEMPLATES:
        for _ in range(3):
            lines, slots = snippets.render(template, rng)
            hidden = {id(line) for found in slots.values() for line in found}
            texts.append(snippets.code([line for line in lines if id(line) not in hidden]))
    assert generate.lint(texts) == [set() for _ in texts]


# ------------------------------------------------------------------ planting and references, hand-computed


def test_open_without_with_dedents_the_block_and_closes() -> None:
    lines = _lines('''
def read(path):
    """Read."""
    with open(path) as handle:
        text = handle.read()
    return text
''')
    assert snippets.open_without_with(lines, random.Random(0))
    assert snippets.code(lines).splitlines()[2:5] == ["    handle = open(path)", "    text = handle.read()", "    handle.close()"]
    assert [line.rule for line in lines] == [None, None, "open-without-with", None, None, None]


def test_mutable_default_replaces_the_none_idiom() -> None:
    lines = _lines('''
def add(item, tags=None):
    """Add."""
    if tags is None:
        tags = []
    tags.append(item)
    return tags
''')
    assert snippets.mutable_default(lines, random.Random(0))
    assert snippets.code(lines) == 'def add(item, tags=[]):\n    """Add."""\n    tags.append(item)\n    return tags'
    assert lines[0].rule == "mutable-default"


def test_builtin_shadowing_renames_within_the_function_only() -> None:
    lines = _lines('''
def find(rows, user_id):
    """Find."""
    return [r for r in rows if r.user_id == user_id and r.get(user_id=1)]
''')
    assert snippets.builtin_shadowing(lines, random.Random(0))
    assert lines[0].text == "def find(rows, id):"
    assert lines[2].text == "    return [r for r in rows if r.user_id == id and r.get(user_id=1)]"


def test_none_and_type_comparisons() -> None:
    lines = _lines("def f(x):\n    if x is not None and isinstance(x, dict):\n        return 1")
    assert snippets.none_comparison(lines, random.Random(0))
    assert lines[1].text == "    if x != None and isinstance(x, dict):"
    assert not snippets.type_comparison(lines, random.Random(0))  # one finding per line
    lines[1].rule = None
    assert snippets.type_comparison(lines, random.Random(0))
    assert lines[1].text == "    if x != None and type(x) == dict:"


def test_reference_from_findings_with_a_limit_and_an_ignored_rule() -> None:
    lines = _lines('''
import os

def load(path, tags=[]):
    try:
        return open(path).read()
    except:
        print(path)
''')
    findings = [(1, "unused-import"), (3, "mutable-default"), (6, "bare-except"), (7, "print-call")]
    review = generate.reference(lines, findings, limit=2, ignored=["print-call"])
    assert review == {
        "summary": "3 issues, first 2 listed: unused import, mutable default.",
        "suggestions": [
            {"line": 1, "rule": "unused-import", "message": "Remove unused import `os`."},
            {"line": 3, "rule": "mutable-default", "message": "Default `tags=[]` is shared between calls; use None."},
        ],
    }
    assert generate.reference(lines, [], limit=None, ignored=[]) == {"summary": "No checklist issues found.",
                                                                     "suggestions": []}


def test_messages_name_what_is_on_the_line() -> None:
    assert checklist.message("non-snake-case", "    userName = row[0]") == "Rename `userName` to `user_name`."
    assert checklist.message("none-comparison", "    if row.get(key) != None:") == "Use `is not None` to test `row.get(key)`."
    assert checklist.message("type-comparison", "    if type(value) == dict:") == "Use `isinstance(value, dict)`."
    assert checklist.message("builtin-shadowing", "    for id in ids:") == "`id` shadows a builtin; rename it."
    assert checklist.message("wildcard-import", "from os.path import *") == "Import names from `os.path` explicitly."


# ------------------------------------------------------------------ the config


def test_the_example_config_loads() -> None:
    from adhere.config import load_config

    config = load_config(EXAMPLE / "adhere.yaml")
    assert config.name == "code-review" and config.model.base == "smollm2-135m-instruct"
    assert config.spec.output.format == "json"
    assert config.spec.output.schema_ == json.loads((EXAMPLE / "review.schema.json").read_text())
    assert [c.id for c in config.spec.constraints] == ["json_schema", "max_words"]
    assert Path(config.data.sources[0].path) == EXAMPLE / "data" / "train.jsonl"
    assert Path(config.data.eval_file) == EXAMPLE / "data" / "eval.jsonl"
    assert config.eval.suites == ["held_out"] and config.eval.list_key == ["line", "rule"]
    assert {name: (f.list, f.key) for name, f in config.eval.item_f1.items()} == {
        "suggestion": ("suggestions", ["line", "rule"]), "rule": ("suggestions", ["rule"])}
    assert config.eval.rouge_fields == ["summary"]
    assert all(rule in config.spec.system_prompt for rule in checklist.RULE_IDS)
    for record in ALL:  # `adhere data` checks references against the spec; none may fail
        assert all(c.check(record["messages"][1]["content"]) for c in config.spec.constraints)


@pytest.mark.embedded
def test_examples_fit_max_length_and_answers_fit_max_new_tokens() -> None:
    from adhere.config import load_config
    from adhere.models import load_tokenizer
    from adhere.models.masking import render

    config = load_config(EXAMPLE / "adhere.yaml")
    tokenizer = load_tokenizer(config.model)
    system = [{"role": "system", "content": config.spec.system_prompt}]
    lengths = [len(render(tokenizer, system + r["messages"]).input_ids) for r in ALL]
    answers = [len(tokenizer(r["messages"][1]["content"]).input_ids) for r in ALL]
    assert max(lengths) <= config.train.max_length
    assert max(answers) < config.eval.max_new_tokens
