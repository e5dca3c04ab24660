"""Reference metrics: ROUGE-L against hand counts and Google's rouge-score, exact match, JSON field scores."""

from __future__ import annotations

import doctest
import random
import sys

import pytest

from adhere.errors import UserError
from adhere.eval import metrics
from adhere.eval.metrics import (
    FieldScores,
    exact_match,
    field_scores,
    json_parse,
    json_schema_valid,
    lcs_length,
    reference_metrics,
    rouge_l,
)
from adhere.spec.config import OutputFormat


def test_docstring_examples_hold():
    result = doctest.testmod(metrics, extraglobs={"OutputFormat": OutputFormat})
    assert result.attempted >= 8 and result.failed == 0


# --- ROUGE-L -----------------------------------------------------------------------------------------


def _lcs_table(a: list, b: list) -> int:
    """The textbook O(len(a) * len(b)) table, to check the bit-parallel version against."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_lcs_length_matches_the_table_on_random_token_lists():
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 25))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 25))]
        assert lcs_length(a, b) == _lcs_table(a, b), (a, b)
    assert lcs_length(list("abcbdab"), list("bdcaba")) == 4  # CLRS's example: "bcba"


@pytest.mark.parametrize(
    "response, reference, expected",
    [
        ("The cat sat on the mat.", "the cat is on the mat", 5 / 6),  # LCS 5 of 6 and 6 tokens
        ("a b c d", "a c", 2 / 3),  # P = 2/4, R = 2/2, F = 2 * 0.5 * 1 / 1.5
        ("c b a", "a b c", 1 / 3),  # LCS 1: order matters
        ("A cat!", "a CAT", 1.0),  # case and punctuation are not tokens
        ("don't", "don t", 1.0),  # the apostrophe splits
        ("café", "caf", 1.0),  # after lower(), only [a-z0-9] survive: é is a separator
        ("naïve", "na ve", 1.0),
        ("東京は大きい", "東京は大きい", 0.0),  # no ASCII letters: no tokens, so 0 even when identical
        ("", "", 0.0),  # rouge-score: 0 if either side has no tokens
        ("...", "a", 0.0),
        ("a", "", 0.0),
        ("x1 42", "X1 42", 1.0),
    ],
)
def test_rouge_l_hand_computed(response, reference, expected):
    assert rouge_l(response, reference) == pytest.approx(expected, abs=1e-12)


def test_rouge_l_is_asymmetric_only_in_precision_and_recall_not_f1():
    assert rouge_l("a b c d", "a c") == rouge_l("a c", "a b c d")


HAND_PICKED = [
    ("", ""),
    ("   ", "\n\t"),
    ("The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log."),
    ("Straße München İstanbul", "strasse munchen istanbul"),
    ("\u212a is the Kelvin sign", "k is the kelvin sign"),  # lower() maps U+212A to ASCII "k"
    ("Ⅻ ½ ² ٣ ３", "12 1 2 2 3 3"),  # non-ASCII digits are separators
    ("running runs ran runner", "run running ran"),
    ("generously conditional relational", "generous condition relate"),
    ("ponies caresses dying sky agreed", "pony caress die sky agree"),
    ("e-mail me at bob@example.com!", "email me at bob example com"),
    ("3.14 is pi; 2,718 is e", "3 14 is pi 2 718 is e"),
]
VOCAB = [
    "the", "The", "THE", "cat", "Cat's", "cats", "running", "runs", "ran", "happiness", "happy",
    "café", "naïve", "東京", "Straße", "\u212a", "İstanbul", "x1", "42", "3.14", "e-mail", "don't",
    "—", "!!!", "...", "a", "an", "generously", "connection", "connected", "\n", "\t", "ĳ", "ﬁle",
]


def _generated_pairs(count: int) -> list[tuple[str, str]]:
    rng = random.Random(1)

    def text() -> str:
        return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(0, 30)))

    return [(text(), text()) for _ in range(count)]


@pytest.mark.parametrize("stem", [False, True])
def test_rouge_l_matches_rouge_score(stem):
    rouge_scorer = pytest.importorskip(
        "rouge_score.rouge_scorer", reason="rouge-score (dev dependency) is the reference; pip install rouge-score"
    )
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)
    pairs = HAND_PICKED + _generated_pairs(300)
    for response, reference in pairs:
        expected = scorer.score(reference, response)["rougeL"].fmeasure  # score(target, prediction)
        assert rouge_l(response, reference, stem=stem) == pytest.approx(expected, abs=1e-12), (response, reference)
    # The generated pairs must exercise both partial and full overlap, or the comparison proves little.
    scores = {round(rouge_l(r, ref, stem=stem), 3) for r, ref in pairs}
    assert 0.0 in scores and 1.0 in scores and len(scores) > 50


def test_rouge_l_stemming_matches_word_forms():
    pytest.importorskip("nltk.stem.porter", reason="stemming uses nltk's Porter stemmer")
    assert rouge_l("cats running", "cat run") == 0.0
    assert rouge_l("cats running", "cat run", stem=True) == 1.0  # "cats" -> "cat", "running" -> "run"
    assert rouge_l("was", "wa", stem=True) == 0.0  # 3-letter tokens are never stemmed


def test_rouge_l_stemming_without_nltk_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk.stem.porter", None)  # makes the import raise ImportError
    metrics._porter.cache_clear()
    metrics._stem.cache_clear()
    try:
        with pytest.raises(UserError, match="pip install 'nltk"):
            rouge_l("cats", "cat", stem=True)
        assert rouge_l("cats", "cats") == 1.0  # without stemming nltk is never needed
    finally:
        metrics._porter.cache_clear()
        metrics._stem.cache_clear()


# --- exact match ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, reference, expected",
    [
        ("Paris", "Paris", True),
        ("  Paris\n", "Paris", True),  # surrounding whitespace only
        ("Paris", "\tParis  ", True),
        ("paris", "Paris", False),  # case is kept
        ("Paris.", "Paris", False),  # punctuation is kept
        ("New  York", "New York", False),  # inner whitespace is kept
        ("", "   ", True),
    ],
)
def test_exact_match(response, reference, expected):
    assert exact_match(response, reference) is expected


# --- JSON ------------------------------------------------------------------------------------------------

REVIEW = "line", "rule"


def test_json_parse_uses_the_spec_parser():
    assert json_parse('{"a": 1}') and json_parse('```json\n{"a": 1}\n```') and json_parse("42")
    assert not json_parse("Sure! {\"a\": 1}") and not json_parse("NaN") and not json_parse("")


def test_json_schema_valid_defaults_to_draft_2020_12():
    # prefixItems exists only since 2020-12; an older draft would ignore it and accept ["x", 1].
    schema = {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]}
    assert json_schema_valid("[1, \"x\"]", schema)
    assert not json_schema_valid("[\"x\", 1]", schema)
    assert not json_schema_valid("[1, ", schema)


def _counts(response: str, reference: str, list_key: tuple[str, ...] = ()) -> tuple[int, int, int]:
    s = field_scores(response, reference, list_key=list_key)
    return s.tp, s.fp, s.fn


def test_field_scores_code_review_items_matched_by_key_in_any_order():
    reference = """{"summary": "ok", "suggestions": [
        {"line": 3, "rule": "E501", "fix": "wrap"}, {"line": 9, "rule": "F401", "fix": "remove import"}]}"""
    response = """{"summary": "fine", "suggestions": [
        {"line": 9.0, "rule": "F401", "fix": "remove import"}, {"line": 3, "rule": "E501", "fix": "shorten"},
        {"line": 12, "rule": "W291", "fix": "strip"}]}"""
    # Reference leaves: summary + 2 x (line, rule, fix) = 7. Response: summary + 3 x 3 = 10.
    # Matched: line 9 (9.0 == 9), rule, fix; line 3, rule -> tp 5. Response extras: summary "fine",
    # fix "shorten", the 3 leaves of the W291 item -> fp 5. Reference misses: summary "ok", fix "wrap" -> fn 2.
    assert _counts(response, reference, REVIEW) == (5, 5, 2)
    s = field_scores(response, reference, list_key=REVIEW)
    assert s.precision == 0.5 and s.recall == 5 / 7 and s.f1 == pytest.approx(10 / 17)


def test_field_scores_without_a_key_match_list_objects_by_position():
    reference = '[{"line": 3, "rule": "E1"}, {"line": 9, "rule": "F4"}]'
    swapped = '[{"line": 9, "rule": "F4"}, {"line": 3, "rule": "E1"}]'
    assert _counts(swapped, reference) == (0, 4, 4)
    assert _counts(swapped, reference, REVIEW) == (4, 0, 0)


def test_field_scores_item_missing_a_key_field_is_unmatched():
    reference = '[{"line": 3, "rule": "E1"}]'
    assert _counts('[{"line": 3}]', reference, REVIEW) == (0, 1, 2)  # falls back to position: no partner


def test_field_scores_lists_of_scalars_are_multisets():
    assert _counts('{"tags": ["b", "a", "a"]}', '{"tags": ["a", "b", "c"]}') == (2, 1, 1)


@pytest.mark.parametrize(
    "response, reference, counts",
    [
        ('{"n": 1}', '{"n": 1.0}', (1, 0, 0)),  # numbers by value
        ('{"n": 1e2}', '{"n": 100}', (1, 0, 0)),
        ('{"n": true}', '{"n": 1}', (0, 1, 1)),  # a boolean is not a number
        ('{"n": "1"}', '{"n": 1}', (0, 1, 1)),  # a string is not a number
        ('{"s": "Yes"}', '{"s": "yes"}', (0, 1, 1)),  # strings exactly
        ('{"n": null}', '{"n": 0}', (0, 1, 1)),
        ('{"a": {"b": {"c": 1}}}', '{"a": {"b": {"c": 1, "d": 2}}}', (1, 0, 1)),  # nested objects by path
        ('{"a": {"c": 1}}', '{"b": {"c": 1}}', (0, 1, 1)),  # same leaf under another key
        ('{"x": [[1, 2], [3]]}', '{"x": [[3], [1, 2]]}', (0, 3, 3)),  # nested lists are positional
    ],
)
def test_field_scores_leaf_comparison(response, reference, counts):
    assert _counts(response, reference) == counts


def test_field_scores_empty_containers_are_leaves():
    assert _counts('{"suggestions": []}', '{"suggestions": []}', REVIEW) == (1, 0, 0)
    assert _counts('{"suggestions": [{"line": 1, "rule": "E1"}]}', '{"suggestions": []}', REVIEW) == (0, 2, 1)
    assert _counts("{}", "{}") == (1, 0, 0)
    assert field_scores('{"a": 1}', "{}").f1 == 0.0


def test_field_scores_unparsed_response_scores_zero():
    s = field_scores("I think the answer is 42", '{"a": 1, "b": [1, 2]}')
    assert (s.tp, s.fp, s.fn) == (0, 0, 3)
    assert s.precision == s.recall == s.f1 == 0.0


def test_field_scores_fenced_response_is_parsed():
    assert _counts('```json\n{"a": 1}\n```', '{"a": 1}') == (1, 0, 0)


def test_field_scores_non_json_reference_is_a_user_error():
    with pytest.raises(UserError, match="reference response 'The answer is 4' is not JSON"):
        field_scores('{"a": 1}', "The answer is 4")


def test_field_scores_survive_deep_nesting():
    deep = "[" * 900 + "1" + "]" * 900  # within the parser's limit, beyond what recursion would allow
    assert _counts(deep, deep) == (1, 0, 0)


def test_field_scores_add_up_to_micro_averages():
    pairs = [('{"a": 1, "b": 2}', '{"a": 1, "b": 3}'), ("oops", '{"c": 1}'), ('{"d": [1]}', '{"d": [1]}')]
    total = sum((field_scores(r, ref) for r, ref in pairs), FieldScores())
    assert (total.tp, total.fp, total.fn) == (2, 1, 2)
    assert total.precision == 2 / 3 and total.recall == 2 / 4 and total.f1 == pytest.approx(4 / 7)
    assert FieldScores().f1 == FieldScores().precision == FieldScores().recall == 0.0


# --- all metrics for a pair ------------------------------------------------------------------------------


def test_reference_metrics_text_format_has_only_text_metrics():
    assert reference_metrics(" Yes ", "yes", OutputFormat(format="text")) == {"rouge_l": 1.0, "exact_match": False}
    assert set(reference_metrics("a", "a", OutputFormat(format="markdown"))) == {"rouge_l", "exact_match"}


def test_reference_metrics_json_format_with_schema():
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    output = OutputFormat(format="json", schema=schema)
    got = reference_metrics('{"a": 1, "b": 2}', '{"a": 1}', output)
    assert got == {
        "rouge_l": pytest.approx(2 / 3),  # tokens "a 1 b 2" vs "a 1"
        "exact_match": False,
        "json_parse": True,
        "json_schema_valid": True,
        "field_precision": 0.5,
        "field_recall": 1.0,
        "field_f1": pytest.approx(2 / 3),
        "field_tp": 1,
        "field_fp": 1,
        "field_fn": 0,
    }
    bad = reference_metrics('{"a": "1"}', '{"a": 1}', output)
    assert bad["json_parse"] is True and bad["json_schema_valid"] is False and bad["field_f1"] == 0.0


def test_reference_metrics_json_without_schema_skips_schema_validity():
    got = reference_metrics('[{"line": 3, "rule": "E1"}]', '[{"rule": "E1", "line": 3}]', OutputFormat(format="json"),
                            ["line", "rule"])  # positional, any sequence of field names
    assert "json_schema_valid" not in got
    assert got["json_parse"] is True and got["field_f1"] == 1.0 and got["exact_match"] is False
    # One field name as a plain string is one key field, not its characters.
    one_field = reference_metrics('[{"id": 2, "v": 1}, {"id": 1, "v": 0}]', '[{"id": 1, "v": 0}, {"id": 2, "v": 1}]',
                                  OutputFormat(format="json"), "id")
    assert one_field["field_tp"] == 4 and one_field["field_f1"] == 1.0
    assert reference_metrics('[1]', '[1]', OutputFormat(format="json"), None)["field_f1"] == 1.0


def test_item_f1_matches_findings_on_their_key_fields_only():
    from adhere.eval.metrics import field_rouge_l, item_f1, item_scores

    ref = '{"suggestions": [{"line": 3, "rule": "bare-except", "message": "a"}, {"line": 7, "rule": "unused-import"}]}'
    got = '{"suggestions": [{"line": 7, "rule": "unused-import", "message": "zzz"}, {"line": 4, "rule": "bare-except"}]}'
    on_line = item_scores(got, ref, path="suggestions", key=("line", "rule"))
    assert (on_line.tp, on_line.fp, on_line.fn) == (1, 1, 1) and on_line.f1 == 0.5
    assert item_f1(got, ref, path="suggestions", key=("rule",)) == 1.0  # the wrong line is forgiven
    assert item_f1("not json", ref, path="suggestions", key=("rule",)) == 0.0
    assert item_f1('{"suggestions": []}', '{"suggestions": []}', path="suggestions", key=("rule",)) == 1.0
    assert item_f1('{"other": []}', '{"suggestions": []}', path="suggestions", key=("rule",)) == 0.0
    assert item_f1('{"suggestions": [{"rule": "x"}]}', '{"suggestions": []}', path="suggestions", key=("rule",)) == 0.0
    assert field_rouge_l('{"summary": "two issues found"}', '{"summary": "two issues"}', path="summary") == 0.8
    assert field_rouge_l('{"summary": 3}', '{"summary": "two issues"}', path="summary") == 0.0


def test_item_f1_an_item_without_its_key_matches_nothing():
    from adhere.eval.metrics import item_f1, item_scores

    # Issue 14, defect 11: two items lacking `line` used to match each other by position (F1 1.0).
    assert item_f1('{"s": [{"rule": "E9"}]}', '{"s": [{"rule": "E1"}]}', path="s", key=("line",)) == 0.0
    assert item_f1('{"s": [{"rule": "E1"}]}', '{"s": [{"rule": "E1"}]}', path="s", key=("line", "rule")) == 0.0
    # Each counts: a false positive in the response, a false negative in the reference.
    unkeyed = item_scores('{"s": [{"line": 1}, {"rule": "E9"}, "E1"]}', '{"s": [{"line": 1}, {"rule": "E1"}]}',
                          path="s", key=("line",))
    assert (unkeyed.tp, unkeyed.fp, unkeyed.fn) == (1, 2, 1)
    # A list of strings is not an empty answer: against an empty reference it finds only false positives.
    assert item_f1('{"s": ["unused import"]}', '{"s": []}', path="s", key=("rule",)) == 0.0
