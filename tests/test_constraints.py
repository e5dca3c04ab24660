"""Every constraint checker on passing and failing responses, and its signature contract."""

from __future__ import annotations

import inspect
import typing

import pytest

from adhere.spec.constraints import CHECKERS, _validator, check, describe

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
    ("json_valid", {}, "42", True),  # any JSON value, not only objects
    ("json_valid", {}, '```JSON\n["a"]```', True),  # label is case-insensitive, closing fence may share the line
    ("json_valid", {}, "```python\n{}\n```", False),  # only ```json or unlabelled fences
    ("json_valid", {}, '```json\n{"a": 1}\n```\nHope this helps!', False),  # the fence must be the whole response
    ("json_valid", {}, '```json\n{}\n```\n```json\n{}\n```', False),  # two blocks are not one JSON value
    ("json_valid", {}, "NaN", False),  # Python's json reads it; JSON does not
    ("json_valid", {}, '{"a": Infinity}', False),
    ("json_schema", {"schema": SCHEMA}, '{"summary": "ok", "suggestions": [{"line": 3}]}', True),
    ("json_schema", {"schema": SCHEMA}, '```\n{"summary": "ok", "suggestions": []}\n```', True),
    ("json_schema", {"schema": SCHEMA}, '{"summary": "ok", "suggestions": [{"line": "3"}]}', False),  # wrong type
    ("json_schema", {"schema": SCHEMA}, '{"summary": "ok"}', False),  # missing key
    ("json_schema", {"schema": SCHEMA}, "not json", False),
    ("json_schema", {"schema": SCHEMA}, '```python\n{"summary": "ok", "suggestions": []}\n```', False),
    ("json_schema", {"schema": SCHEMA}, '["summary", "suggestions"]', False),  # valid JSON, wrong top-level type
    ("json_schema", {"schema": {"type": "string", "format": "email"}}, '"not an email"', True),  # format is not asserted
    ("max_words", {"n": 3}, "one two three", True),  # boundary is inclusive
    ("max_words", {"n": 3}, "one two three four", False),
    ("max_words", {"n": 3}, "naïve café déjà", True),  # unicode letters are word characters
    ("max_words", {"n": 0}, "", True),
    ("max_words", {"n": 1}, "don't", False),  # \w+ splits at the apostrophe, as IFEval does
    ("max_words", {"n": 1}, "你好世界", True),  # an unspaced CJK run is one word
    ("min_words", {"n": 3}, "one, two; three!", True),  # boundary is inclusive; punctuation is not a word
    ("min_words", {"n": 3}, "one two", False),
    ("min_words", {"n": 3}, "— … —", False),  # unicode punctuation only
    ("min_words", {"n": 1}, "", False),
    ("max_chars", {"n": 5}, "abcde", True),
    ("max_chars", {"n": 5}, "abcdef", False),
    ("max_chars", {"n": 5}, "ééééé", True),  # characters, not UTF-8 bytes (10)
    ("lowercase", {}, "all lower, 123 é", True),
    ("lowercase", {}, "Not lower", False),
    ("lowercase", {}, "ÉCOLE", False),
    ("lowercase", {}, "", True),  # nothing uppercase in it
    ("uppercase", {}, "ALL UPPER, 123", True),
    ("uppercase", {}, "ALMOST uPPER", False),
    ("uppercase", {}, "STRAßE", False),  # ß is a lowercase letter
    ("uppercase", {}, "ΕΛΛΆΔΑ", True),
    ("no_comma", {}, "no commas here.", True),
    ("no_comma", {}, "one, two", False),
    ("contains_keywords", {"keywords": ["Docstring", "import"]}, "missing docstring; unused IMPORT", True),
    ("contains_keywords", {"keywords": ["docstring", "lambda"]}, "missing docstring", False),
    ("contains_keywords", {"keywords": ["cat"]}, "a category", True),  # substrings, as IFEval
    ("contains_keywords", {"keywords": ["café"]}, "CAFÉ au lait", True),  # unicode case-insensitive
    ("contains_keywords", {"keywords": ["C++"]}, "written in C", False),  # literal, not a regex
    ("contains_keywords", {"keywords": ["a"]}, "", False),
    ("forbidden_words", {"words": ["refund"]}, "We refunded it.", True),  # whole words only
    ("forbidden_words", {"words": ["refund"]}, "No REFUND possible.", False),
    ("forbidden_words", {"words": ["refund"]}, "(refund)", False),
    ("forbidden_words", {"words": ["C++"]}, "I like C++ a lot", False),  # IFEval's \bC\+\+\b misses this
    ("forbidden_words", {"words": ["C++"]}, "I like C and C#", True),
    ("forbidden_words", {"words": ["naïve"]}, "Quite NAÏVE.", False),
    ("forbidden_words", {"words": ["", " "]}, "anything", True),  # blank words are ignored
    ("starts_with", {"text": "Summary:"}, "  summary: all good", True),
    ("starts_with", {"text": "Summary:"}, "All good. Summary:", False),
    ("starts_with", {"text": "Summary:"}, "", False),
    ("ends_with", {"text": "Any other questions?"}, "Done.\nAny other questions?  \n", True),
    ("ends_with", {"text": "Any other questions?"}, "Done.\r\nANY OTHER QUESTIONS?\r\n", True),
    ("ends_with", {"text": "Any other questions?"}, "Any other questions? Done.", False),
    ("ends_with", {"text": 'he said "yes"'}, 'And he said "yes"', True),  # quotes are not stripped
    ("num_bullets", {"n": 2}, "Intro\n* first\n- second\n", True),
    ("num_bullets", {"n": 2}, "* first\n**bold** line\n---\n- second", True),  # bold and rules are not bullets
    ("num_bullets", {"n": 2}, "* only one", False),
    ("num_bullets", {"n": 1}, "**Bold** heading\n**Also bold**:\n- item", True),  # bold lines are not bullets
    ("num_bullets", {"n": 1}, "- a\n* * *\n- - -\n---\n***", True),  # rules are not bullets
    ("num_bullets", {"n": 2}, "- **Bold** lead\n  * nested item", True),  # bold inside a bullet, indented bullet
    ("num_bullets", {"n": 0}, "-5 degrees\n*emphasis*\n1. numbered\n*\n- ", True),  # no space or no text after the marker
    ("num_bullets", {"n": 2}, "* a\r\n-\tb\r\n", True),  # CRLF, tab after the marker
    ("num_bullets", {"n": 0}, "", True),
    ("num_bullets", {"n": 2, "relation": "at least"}, "* a\n* b\n* c", True),
    ("num_bullets", {"n": 2, "relation": "at least"}, "* a", False),
    ("num_bullets", {"n": 2, "relation": "at most"}, "* a\n* b", True),
    ("num_bullets", {"n": 2, "relation": "at most"}, "* a\n* b\n* c", False),
    ("num_paragraphs", {"n": 2}, "First part.\n\nSecond part.", True),
    ("num_paragraphs", {"n": 2}, "First part.\r\n\r\nSecond part.\r\n", True),  # CRLF
    ("num_paragraphs", {"n": 2}, "First.\n\n\n  \nSecond.\n\nThird.", False),
    ("num_paragraphs", {"n": 2}, "\n\nOne line\nsame paragraph.\n \t \nSecond.\n\n", True),  # whitespace-only lines
    ("num_paragraphs", {"n": 2}, "First.\r\rSecond.", True),  # old Mac CR line ends
    ("num_paragraphs", {"n": 1}, "First.\nstill first.", True),
    ("num_paragraphs", {"n": 0}, " \n\n ", True),
    ("num_paragraphs", {"n": 1, "relation": "at least"}, "", False),
    ("num_paragraphs", {"n": 3, "relation": "at most"}, "a\n\nb", True),
    ("regex", {"pattern": r"^\{.*\}$"}, '{"a": 1}', True),
    ("regex", {"pattern": r"^\{.*\}$"}, 'x {"a": 1}', False),
    ("regex", {"pattern": r"\bLGTM\b"}, "Review: LGTM.", True),  # search, not fullmatch
]


@pytest.mark.parametrize(("constraint_id", "kwargs", "response", "expected"), CASES)
def test_checker(constraint_id: str, kwargs: dict, response: str, expected: bool) -> None:
    assert check(constraint_id, response, **kwargs) is expected


def test_describe_is_the_first_docstring_line() -> None:
    assert describe("max_words") == "The response has at most `n` words."
    assert all("\n" not in describe(constraint_id) for constraint_id in CHECKERS)


def test_schema_validators_are_cached_by_content() -> None:
    _validator.cache_clear()
    first = {"type": "object", "required": ["a"]}
    same_reordered = {"required": ["a"], "type": "object"}
    assert check("json_schema", '{"a": 1}', schema=first)
    assert not check("json_schema", '{"b": 1}', schema=same_reordered)
    assert _validator.cache_info().currsize == 1


def test_deep_json_fails_instead_of_raising() -> None:
    recursive = {"type": "array", "items": {"$ref": "#"}}
    assert not check("json_schema", "[" * 900 + "]" * 900, schema=recursive)
    assert not check("json_valid", "[" * 100_000 + "]" * 100_000)
    assert check("json_schema", "[[[]]]", schema=recursive)  # the schema itself works


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
    hints = typing.get_type_hints(fn)  # what spec.config builds the argument model from
    assert all(p.name in hints for p in params) and hints["response"] is str and hints["return"] is bool
    assert all(not isinstance(hints[p.name], str) for p in params)
    assert fn.__doc__ and describe(constraint_id).startswith("The response")


@pytest.mark.parametrize(
    "response",
    ["", "\x00", "{" * 5000, "[" * 5000 + "]" * 5000, "```json\n```", "```", "\n\n\n", "\r\n\r", "🙂" * 100, "\ud800", "1" * 5000],
)
def test_checkers_never_raise(response: str) -> None:
    samples = {"n": 2, "keywords": ["a"], "words": ["a"], "text": "a", "schema": SCHEMA, "pattern": "a"}
    for constraint_id, fn in CHECKERS.items():
        names = [p for p in inspect.signature(fn).parameters if p != "response"]
        kwargs = {k: samples[k] for k in names if k in samples}
        assert isinstance(check(constraint_id, response, **kwargs), bool)
