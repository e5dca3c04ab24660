"""Every constraint checker on passing and failing responses, and its signature contract."""

from __future__ import annotations

import inspect
import typing

import pytest

from adhere.spec.constraints import CHECKERS, check, describe

SCHEMA = {
    "type": "object",
    "required": ["summary", "suggestions"],
    "properties": {
        "summary": {"type": "string"},
        "suggestions": {"type": "array", "items": {"type": "object", "required": ["line"], "properties": {"line": {"type": "integer"}}}},
    },
}

CASES = [
    # (id, kwargs, response, expected)
    ("json_valid", {}, '{"a": 1}', True),
    ("json_valid", {}, '```json\n{"a": 1}\n```', True),
    ("json_valid", {}, '{"a": 1', False),
    ("json_valid", {}, "Sure! {\"a\": 1}", False),
    ("json_valid", {}, "", False),
    ("json_schema", {"schema": SCHEMA}, '{"summary": "ok", "suggestions": [{"line": 3}]}', True),
    ("json_schema", {"schema": SCHEMA}, '```\n{"summary": "ok", "suggestions": []}\n```', True),
    ("json_schema", {"schema": SCHEMA}, '{"summary": "ok", "suggestions": [{"line": "3"}]}', False),  # wrong type
    ("json_schema", {"schema": SCHEMA}, '{"summary": "ok"}', False),  # missing key
    ("json_schema", {"schema": SCHEMA}, "not json", False),
    ("max_words", {"n": 3}, "one two three", True),  # boundary is inclusive
    ("max_words", {"n": 3}, "one two three four", False),
    ("max_words", {"n": 3}, "naïve café déjà", True),  # unicode letters are word characters
    ("max_words", {"n": 0}, "", True),
    ("min_words", {"n": 3}, "one, two; three!", True),
    ("min_words", {"n": 3}, "one two", False),
    ("max_chars", {"n": 5}, "abcde", True),
    ("max_chars", {"n": 5}, "abcdef", False),
    ("lowercase", {}, "all lower, 123 é", True),
    ("lowercase", {}, "Not lower", False),
    ("lowercase", {}, "ÉCOLE", False),
    ("uppercase", {}, "ALL UPPER, 123", True),
    ("uppercase", {}, "ALMOST uPPER", False),
    ("no_comma", {}, "no commas here.", True),
    ("no_comma", {}, "one, two", False),
    ("contains_keywords", {"keywords": ["Docstring", "import"]}, "missing docstring; unused IMPORT", True),
    ("contains_keywords", {"keywords": ["docstring", "lambda"]}, "missing docstring", False),
    ("forbidden_words", {"words": ["refund"]}, "We refunded it.", True),  # whole words only
    ("forbidden_words", {"words": ["refund"]}, "No REFUND possible.", False),
    ("starts_with", {"text": "Summary:"}, "  summary: all good", True),
    ("starts_with", {"text": "Summary:"}, "All good. Summary:", False),
    ("ends_with", {"text": "Any other questions?"}, "Done.\nAny other questions?  \n", True),
    ("ends_with", {"text": "Any other questions?"}, "Any other questions? Done.", False),
    ("num_bullets", {"n": 2}, "Intro\n* first\n- second\n", True),
    ("num_bullets", {"n": 2}, "* first\n**bold** line\n---\n- second", True),  # bold and rules are not bullets
    ("num_bullets", {"n": 2}, "* only one", False),
    ("num_bullets", {"n": 2, "relation": "at least"}, "* a\n* b\n* c", True),
    ("num_bullets", {"n": 2, "relation": "at most"}, "* a\n* b\n* c", False),
    ("num_paragraphs", {"n": 2}, "First part.\n\nSecond part.", True),
    ("num_paragraphs", {"n": 2}, "First part.\r\n\r\nSecond part.\r\n", True),  # CRLF
    ("num_paragraphs", {"n": 2}, "First.\n\n\n  \nSecond.\n\nThird.", False),
    ("num_paragraphs", {"n": 1, "relation": "at least"}, "", False),
    ("num_paragraphs", {"n": 3, "relation": "at most"}, "a\n\nb", True),
    ("regex", {"pattern": r"^\{.*\}$"}, '{"a": 1}', True),
    ("regex", {"pattern": r"^\{.*\}$"}, 'x {"a": 1}', False),
]


@pytest.mark.parametrize(("constraint_id", "kwargs", "response", "expected"), CASES)
def test_checker(constraint_id: str, kwargs: dict, response: str, expected: bool) -> None:
    assert check(constraint_id, response, **kwargs) is expected


def test_every_checker_has_passing_and_failing_cases() -> None:
    covered = {(cid, expected) for cid, _, _, expected in CASES}
    for constraint_id in CHECKERS:
        assert (constraint_id, True) in covered and (constraint_id, False) in covered, constraint_id


@pytest.mark.parametrize("constraint_id", sorted(CHECKERS))
def test_checker_contract(constraint_id: str) -> None:
    fn = CHECKERS[constraint_id]
    params = list(inspect.signature(fn).parameters.values())
    assert params[0].name == "response"
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
    hints = typing.get_type_hints(fn)
    assert all(p.name in hints for p in params) and hints["return"] is bool
    assert describe(constraint_id).startswith("The response")


@pytest.mark.parametrize("response", ["", "\x00", "{" * 5000, "```json\n```", "\n\n\n", "🙂" * 100])
def test_checkers_never_raise(response: str) -> None:
    samples = {"n": 2, "keywords": ["a"], "words": ["a"], "text": "a", "schema": SCHEMA, "pattern": "a"}
    for constraint_id, fn in CHECKERS.items():
        names = [p for p in inspect.signature(fn).parameters if p != "response"]
        kwargs = {k: samples[k] for k in names if k in samples}
        assert isinstance(check(constraint_id, response, **kwargs), bool)
