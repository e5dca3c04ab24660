"""Synth's pieces on their own: the ROUGE-L pool, blacklist, constraint catalog, seed files, config errors.

    .venv/bin/python -m pytest tests/test_synth_filters.py -q     # about a second, no model
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from adhere.config import validate_config
from adhere.data.decontam import EvalIndex
from adhere.errors import UserError
from adhere.eval.ifeval.instructions import INSTRUCTIONS, validate_kwargs
from adhere.eval.metrics import rouge_l
from adhere.spec.constraints import CHECKERS
from adhere.synth import catalog
from adhere.synth.filters import IFEVAL_PROMPTS, RougePool, blacklisted
from adhere.synth.seeds import read_seeds
from adhere.synth.self_instruct import parse_proposal

IFEVAL_ROWS = [json.loads(line) for line in IFEVAL_PROMPTS.read_text().splitlines()]


# ---------------------------------------------------------------- ROUGE-L pool


def test_pool_scores_equal_rouge_l_and_stop_at_the_threshold() -> None:
    rng = random.Random(0)
    vocab = ["write", "a", "short", "poem", "about", "the", "sea", "explain", "why", "sky", "is", "blue", "list", "three", "tips", "for", "sleep"]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(1, 12))) for _ in range(300)]
    pool = RougePool(texts[:200])
    for candidate in texts[200:]:
        expected = max(rouge_l(candidate, t) for t in texts[:200])
        score, closest = pool.most_similar(candidate)
        assert score == pytest.approx(expected, abs=1e-12)
        assert rouge_l(candidate, closest) == pytest.approx(score, abs=1e-12)
    # Self-Instruct's rule: 0.7 and above is too similar; an early stop still reports a score at or above it.
    pool = RougePool(["Write a short poem about the sea."])
    assert pool.most_similar("Write a short poem about the ocean.", 0.7)[0] >= 0.7  # 6 of 7 words: 0.857
    assert pool.most_similar("Explain how tides work.", 0.7)[0] < 0.7
    assert RougePool().most_similar("anything") == (0.0, "")


def test_blacklist_matches_whole_words_and_phrases_in_any_case() -> None:
    words = ["image", "go to", "draw"]
    assert blacklisted("Describe this IMAGE in detail", words) == "image"
    assert blacklisted("Please go to the store", words) == "go to"
    assert blacklisted("Imagine a drawer of socks", words) is None  # 'image' and 'draw' only as whole words
    assert blacklisted("Go  to, the park", words) == "go to"


def test_parse_proposal_reads_task_and_input_or_gives_nothing() -> None:
    assert parse_proposal("Task: Sort these numbers.\nInput: 3, 1, 2") == ("Sort these numbers.", "3, 1, 2")
    assert parse_proposal("Sure! Task 7: Name a color.\nInput: <none>") == ("Name a color.", "")
    assert parse_proposal("Name a color.") == ("Name a color.", "")
    assert parse_proposal("Task: A\nInput: none\nTask: B") == ("A", "")
    assert parse_proposal("   ") == ("", "")


# ---------------------------------------------------------------- constraint catalog


def test_catalog_covers_ifeval_and_draws_valid_arguments_for_both_registries() -> None:
    assert set(catalog.registry("ifeval")) == set(INSTRUCTIONS)
    assert set(catalog.registry("spec")) <= set(CHECKERS)
    rng = random.Random(1)
    for _ in range(500):
        for attached in catalog.draw("ifeval", rng, "Describe a walk in the park.", 3):
            assert validate_kwargs(attached.id, attached.kwargs) == attached.kwargs
            assert isinstance(attached.check("some text"), bool) and attached.phrase
        for attached in catalog.draw("spec", rng, "Describe a walk.", 3):
            assert isinstance(attached.check("some text"), bool)


def test_contradictory_combinations_are_never_drawn() -> None:
    assert not catalog.compatible("ifeval", "change_case:english_lowercase", "change_case:english_capital")
    assert not catalog.compatible("ifeval", "detectable_format:json_format", "punctuation:no_comma")
    assert not catalog.compatible("ifeval", "detectable_format:json_format", "detectable_format:number_bullet_lists")
    assert not catalog.compatible("ifeval", "language:response_language", "keywords:existence")
    assert not catalog.compatible("spec", "lowercase", "uppercase")
    assert catalog.compatible("ifeval", "punctuation:no_comma", "change_case:english_lowercase")
    rng = random.Random(2)
    for registry in ("ifeval", "spec"):
        for _ in range(2000):
            ids = [a.id for a in catalog.draw(registry, rng, "p", 3)]
            assert all(catalog.compatible(registry, a, b) for i, a in enumerate(ids) for b in ids[i + 1:]), ids
    # With only clashing kinds allowed, fewer constraints are attached rather than a contradiction.
    only_case = ["change_case:english_lowercase", "change_case:english_capital"]
    assert len(catalog.draw("ifeval", rng, "p", 3, only_case)) == 1


def test_wordings_and_keywords_differ_from_ifeval_test_prompts() -> None:
    index = EvalIndex(6)  # stricter than the 13-word decontamination
    for row in IFEVAL_ROWS:
        index.add(row["prompt"], f"key {row['key']}")
    rng = random.Random(3)
    for _ in range(3000):
        for attached in catalog.draw("ifeval", rng, "Plan a picnic.", 3) + catalog.draw("spec", rng, "x", 3):
            assert index.match(attached.phrase) is None, attached.phrase
    used = set()
    for row in IFEVAL_ROWS:
        for kwargs in row["kwargs"]:
            for key in ("keywords", "forbidden_words", "keyword", "first_word", "end_phrase", "section_spliter", "language"):
                value = kwargs.get(key)
                used.update(v.casefold() for v in (value if isinstance(value, list) else [value]) if v)
    ours = catalog.KEYWORDS + catalog.FILLERS + catalog.END_PHRASES + catalog.FIRST_WORDS + catalog.SECTION_NAMES
    assert not {w.casefold() for w in ours + list(catalog.LANGUAGES)} & used


# ---------------------------------------------------------------- seed files


def test_seed_file_drops_duplicates_and_malformed_lines_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join([
        json.dumps({"instruction": "Name a fruit.", "output": "Apple."}),
        "{not json",
        json.dumps({"instruction": "  name a   FRUIT. "}),  # a duplicate of line 1, up to case and spacing
        json.dumps({"prompt": "Write a haiku about rain."}),
        json.dumps({"text": "no known field"}),
        json.dumps({"instruction": 5}),
        json.dumps({"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]}),
        "",
        json.dumps(["a list"]),
    ]) + "\n")
    seeds, dropped = read_seeds(path)
    assert [(s.location, s.instruction, s.output) for s in seeds] == [
        ("line 1", "Name a fruit.", "Apple."), ("line 4", "Write a haiku about rain.", ""), ("line 7", "Hi there", "Hello!")]
    assert [(d["location"], d["rule"]) for d in dropped] == [
        ("line 2", "malformed_json"), ("line 3", "duplicate"), ("line 5", "unknown_format"), ("line 6", "wrong_type"),
        ("line 9", "wrong_type")]
    assert "line 1" in dropped[1]["reason"]
    assert len(seeds) + len(dropped) == 8  # every non-blank line accounted for


def test_seed_file_with_nothing_usable_is_an_error_naming_the_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("{oops\n" + json.dumps({"prompt": ""}) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl: no usable seed task \(line 1: not valid JSON.*line 2: prompt is empty"):
        read_seeds(path)
    with pytest.raises(UserError, match="no such file"):
        read_seeds(tmp_path / "missing.txt")
    text = tmp_path / "prompts.txt"
    text.write_text("Plan a trip.\n\nplan a trip.\nDescribe snow.\n")
    seeds, dropped = read_seeds(text)
    assert [s.instruction for s in seeds] == ["Plan a trip.", "Describe snow."]
    assert [(d["location"], d["rule"]) for d in dropped] == [("line 3", "duplicate")]


# ---------------------------------------------------------------- config


def _config(tmp_path: Path, synth: dict) -> object:
    return validate_config({"name": "p", "synth": {"seed_file": "seeds.jsonl", **synth}}, base_dir=tmp_path)


def test_synth_config_errors_name_the_key(tmp_path: Path) -> None:
    config = _config(tmp_path, {})
    assert config.synth.teacher.kind == "base" and config.synth.seed_file == str(tmp_path / "seeds.jsonl")
    assert validate_config({"name": "p"}, base_dir=tmp_path).synth is None
    cases = [
        ({"teacher": "tuned"}, "synth.teacher.kind: the teacher cannot be the tuned model"),
        ({"constraints": {"kinds": ["punctuation:no_commas"]}},
         ("synth.constraints.kinds[0]: no constraint 'punctuation:no_commas' in registry 'ifeval'; "
          "did you mean 'punctuation:no_comma'?")),
        ({"constraints": {"registry": "spec", "kinds": ["punctuation:no_comma"]}}, "did you mean 'no_comma'?"),
        ({"constraints": {"min_constraints": 3, "max_constraints": 2}}, "synth.constraints.max_constraints: must be at least"),
        ({"self_instruct": {"similarity": 1.5}}, "synth.self_instruct.similarity: expected a number between 0 and 1"),
        ({"budget": {"max_calls": -1}}, "synth.budget.max_calls: expected an integer >= 0"),
        ({"mode": "distill"}, "synth.mode: expected 'self_instruct', 'constraints' or 'rewrite'"),
        ({"targte": 5}, "synth.targte: unknown key; did you mean 'target'?"),
    ]
    for synth, message in cases:
        with pytest.raises(UserError) as caught:
            _config(tmp_path, synth)
        assert message in str(caught.value), (synth, str(caught.value))
    with pytest.raises(UserError, match="synth.seed_file: required key is missing"):
        validate_config({"name": "p", "synth": {}}, base_dir=tmp_path)
