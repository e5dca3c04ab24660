"""Reference metrics for one (response, reference) pair, used by the evaluation stage (step 5).

    >>> rouge_l("The cat sat on the mat.", "the cat is on the mat")
    0.8333333333333334
    >>> reference_metrics('{"a": 1}', '{"a": 1.0, "b": 2}', OutputFormat(format="json"))["field_f1"]
    0.6666666666666666

ROUGE-L matches Google's `rouge-score` package (`RougeScorer(["rougeL"])`, the scores most papers report)
without depending on it; tests compare the two on a few hundred pairs. JSON metrics reuse the spec's own
parser (`adhere.spec.constraints`), so "parses" means the same thing in curation, evaluation and serving.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from adhere.errors import UserError
from adhere.spec.constraints import json_schema, parse_json

if TYPE_CHECKING:
    from adhere.spec.config import OutputFormat

# rouge-score's tokenizer: lowercase, then every character outside [a-z0-9] is a separator. It runs after
# str.lower(), so only ASCII letters and digits survive: "café" is the token "caf", "naïve" is "na ve",
# and CJK, Cyrillic or Arabic text has no tokens at all (ROUGE-L 0), so the score means little outside
# Latin-script languages.
ROUGE_TOKEN = re.compile(r"[a-z0-9]+")
# rouge-score stems only tokens longer than 3 characters ("was" stays, "cats" becomes "cat").
STEM_MIN_CHARS = 4


@lru_cache(maxsize=1)
def _porter() -> Any:
    try:
        # nltk's PorterStemmer is plain code: it needs no `nltk.download` data, so it works offline.
        from nltk.stem.porter import PorterStemmer
    except ImportError:
        raise UserError(
            "ROUGE-L with stemming needs nltk's Porter stemmer, which is not installed; "
            "run `pip install 'nltk>=3.8'` or score without stemming"
        ) from None
    return PorterStemmer()


@lru_cache(maxsize=65536)  # a few hundred eval pairs repeat the same few thousand words
def _stem(token: str) -> str:
    return _porter().stem(token)


def rouge_tokens(text: str, stem: bool = False) -> list[str]:
    """The tokens ROUGE-L compares, as rouge-score's tokenizer makes them."""
    tokens = ROUGE_TOKEN.findall(text.lower())
    if stem:
        tokens = [_stem(t) if len(t) >= STEM_MIN_CHARS else t for t in tokens]
        # rouge-score drops any stem that is not [a-z0-9]+ (none are, for ASCII input; kept for parity).
        tokens = [t for t in tokens if ROUGE_TOKEN.fullmatch(t)]
    return tokens


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (Allison & Dix 1986, Crochemore et al. 2001): one big-integer step per token of `a`,
    not a len(a) x len(b) table: two 512-token responses take 0.2 ms here, rouge-score's table 70 ms.
    """
    return lcs_with_masks(a, lcs_masks(b), len(b))


def lcs_masks(b: list[str]) -> dict[str, int]:
    """Each token of `b` with the bit set of its positions: built once, reused against many `a` (synth's pool)."""
    masks: dict[str, int] = {}
    for j, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << j)
    return masks


def lcs_with_masks(a: list[str], masks: dict[str, int], width: int) -> int:
    """`lcs_length(a, b)` from `lcs_masks(b)` and `len(b)`."""
    if not a or not width:
        return 0
    full = (1 << width) - 1
    v = full  # a 0 bit at position j marks a match counted at b[j]
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return width - v.bit_count()


def rouge_l(response: str, reference: str, *, stem: bool = False) -> float:
    """ROUGE-L F1 of the response against the reference, as `rouge-score` computes it.

        >>> rouge_l("A cat.", "a CAT")
        1.0

    precision = LCS / response tokens, recall = LCS / reference tokens, F1 their harmonic mean.
    If either side has no tokens (empty, only punctuation, or non-Latin script) the score is 0.0,
    even when both are empty, as in `rouge-score`. `stem=True` is its `use_stemmer=True` mode
    (nltk's Porter stemmer, imported only then).
    """
    response_tokens = rouge_tokens(response, stem)
    reference_tokens = rouge_tokens(reference, stem)
    lcs = lcs_length(reference_tokens, response_tokens)
    if lcs == 0:
        return 0.0
    # Same operations in the same order as rouge_score.scoring.fmeasure, so the floats agree bit for bit.
    precision = lcs / len(response_tokens)
    recall = lcs / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(response: str, reference: str) -> bool:
    """The response equals the reference once leading and trailing whitespace is stripped from both.

    Only `str.strip()` whitespace (spaces, tabs, newlines) at the two ends is normalised: case, inner
    whitespace and punctuation must match, so "Yes." and "yes" differ.
    """
    return response.strip() == reference.strip()


def json_parse(response: str) -> bool:
    """The response is JSON, alone or as one fenced ```json block (the spec's own parser)."""
    return parse_json(response)[0]


def json_schema_valid(response: str, schema: dict) -> bool:
    """The response is JSON that validates against `schema`.

    Draft 2020-12 unless the schema names another draft in `$schema` (`validator_for`); the same
    check as the spec's `json_schema` constraint, so eval and serving agree.
    """
    return json_schema(response, schema=schema)


@dataclass(frozen=True)
class FieldScores:
    """Leaf counts of a response's JSON against the reference's; add them for corpus-level micro scores.

        >>> FieldScores(tp=2, fp=1, fn=0) + FieldScores(tp=0, fp=0, fn=1)
        FieldScores(tp=2, fp=1, fn=1)
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        """Matched leaves / response leaves (0.0 when the response has none, e.g. it did not parse)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """Matched leaves / reference leaves."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0.0 when both are 0)."""
        total = 2 * self.tp + self.fp + self.fn  # 2PR / (P + R) = 2tp / (2tp + fp + fn)
        return 2 * self.tp / total if total else 0.0

    def __add__(self, other: FieldScores) -> FieldScores:
        return FieldScores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def _scalar(value: Any) -> tuple:
    """A leaf value, tagged by JSON type: `true` is not `1` (Python says True == 1), but 1 == 1.0."""
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, (int, float)):
        return ("number", value)  # Python compares int and float exactly by value, and hashes them alike
    if isinstance(value, str):
        return ("string", value)
    if value is None:
        return ("null", None)
    # Only empty containers reach here: `"suggestions": []` is a statement ("nothing to suggest") that a
    # response should get credit for repeating, so it is a leaf of its own.
    return ("object",) if isinstance(value, dict) else ("array",)


def _item_segment(item: Any, index: int, list_key: tuple[str, ...]) -> Any:
    """Where a list item sits in a leaf path; items with equal segments are the same item."""
    if isinstance(item, dict):
        if list_key and all(f in item and not isinstance(item[f], (dict, list)) for f in list_key):
            return tuple((f, _scalar(item[f])) for f in list_key)  # same key values: same item, any order
        return index  # an object without the key fields is matched by position
    if isinstance(item, list):
        return index
    return None  # scalars: one shared segment, so a list of scalars compares as a multiset


def json_leaves(value: Any, list_key: tuple[str, ...] = ()) -> Counter:
    """The multiset of `(path, value)` leaves of a parsed JSON value.

        >>> sorted(json_leaves({"a": [2, 1], "b": {}}).elements())
        [(('a', None), ('number', 1)), (('a', None), ('number', 2)), (('b',), ('object',))]

    Path segments: a str for an object key, None for any scalar list item, the key-value tuple for an
    object item that has every `list_key` field with a scalar value, else the int position.
    """
    leaves: Counter = Counter()
    stack = [((), value)]  # a loop, not recursion: the parser accepts ~1,000 levels, about Python's own limit
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict) and node:
            stack.extend((path + (k,), v) for k, v in node.items())
        elif isinstance(node, list) and node:
            stack.extend((path + (_item_segment(v, i, list_key),), v) for i, v in enumerate(node))
        else:
            leaves[(path, _scalar(node))] += 1
    return leaves


def field_scores(response: str, reference: str, *, list_key: tuple[str, ...] = ()) -> FieldScores:
    """Leaf-level precision, recall and F1 of the response's JSON against the reference's.

        >>> s = field_scores('[{"line": 3, "rule": "E1", "fix": "x"}]', '[{"rule": "E1", "line": 3, "fix": "y"}]',
        ...                  list_key=("line", "rule"))
        >>> (s.tp, s.fp, s.fn)
        (2, 1, 1)

    Objects compare key by key; lists of objects pair items by `list_key` (e.g. ("line", "rule") for
    code-review suggestions), whatever their order, and an item with no partner counts all its leaves
    as false positives (response) or false negatives (reference); lists of scalars compare as multisets;
    numbers by value (1 == 1.0), strings exactly, `true` never equals `1`. An empty `{}` or `[]` is one
    leaf, so a reference `{}` scores 1.0 against `{}` and 0.0 against `{"a": 1}`.

    A response that does not parse has no leaves: tp = fp = 0, fn = every reference leaf, so precision,
    recall and F1 are 0. A reference that does not parse raises UserError, since a JSON spec's references
    must themselves be JSON.
    """
    ok, reference_value = parse_json(reference)
    if not ok:
        start = reference.strip()[:40]
        raise UserError(
            f"reference response {start!r} is not JSON, but the spec's output.format is 'json'; "
            "fix that record's assistant message in the eval data, or set output.format to 'text'"
        )
    expected = json_leaves(reference_value, list_key)
    parsed, response_value = parse_json(response)
    got = json_leaves(response_value, list_key) if parsed else Counter()
    tp = sum((expected & got).values())  # multiset intersection: min of the two counts per leaf
    return FieldScores(tp=tp, fp=sum(got.values()) - tp, fn=sum(expected.values()) - tp)


def reference_metrics(
    response: str, reference: str, output: OutputFormat, list_key: Sequence[str] | None = (), *, stem: bool = False
) -> dict[str, float | bool | int]:
    """Every metric that applies to the spec's output format, as one flat dict.

        >>> reference_metrics("Yes", "yes", OutputFormat())
        {'rouge_l': 1.0, 'exact_match': False}

    Always `rouge_l` and `exact_match`. When `output.format` is 'json', also `json_parse`, the field
    scores (`field_precision`, `field_recall`, `field_f1`, and the counts `field_tp`, `field_fp`,
    `field_fn` to sum for micro averages), and `json_schema_valid` when `output.schema` is set.
    `list_key` names the fields that identify an object in a list (see `field_scores`); None or () for none.
    """
    metrics: dict[str, float | bool | int] = {
        "rouge_l": rouge_l(response, reference, stem=stem),
        "exact_match": exact_match(response, reference),
    }
    if output.format != "json":
        return metrics
    metrics["json_parse"] = json_parse(response)
    if output.schema_ is not None:
        metrics["json_schema_valid"] = json_schema_valid(response, output.schema_)
    # One field name given as a plain string would otherwise split into its characters.
    key = (list_key,) if isinstance(list_key, str) else tuple(list_key or ())
    scores = field_scores(response, reference, list_key=key)
    metrics.update(
        field_precision=scores.precision, field_recall=scores.recall, field_f1=scores.f1,
        field_tp=scores.tp, field_fp=scores.fp, field_fn=scores.fn,
    )
    return metrics


def _at(value: Any, path: str) -> Any:
    """The value at a dotted path of object keys ('review.suggestions'), or None when it is not there."""
    for part in path.split(".") if path else []:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def item_scores(response: str, reference: str, *, path: str, key: tuple[str, ...]) -> FieldScores:
    """Precision, recall and F1 of the items of the list at `path`, each item identified by its `key` fields only.

        >>> s = item_scores('{"s": [{"line": 3, "rule": "a"}, {"line": 9, "rule": "b"}]}',
        ...                 '{"s": [{"line": 3, "rule": "a", "message": "m"}]}', path="s", key=("line", "rule"))
        >>> (s.tp, s.fp, s.fn)
        (1, 1, 0)

    With key ("line", "rule") this is the F1 of code-review findings; with ("rule",) it forgives a wrong line.
    Items are a multiset (two identical findings count twice). An item that is not an object or lacks a
    key field matches nothing, not even another such item: it is a false positive in the response and a
    false negative in the reference.
    Both lists empty is a perfect answer (tp = fp = fn = 0, and F1 is then defined as 1.0 by `item_f1`).
    A response that does not parse, or has no list there, finds nothing: fn = every reference item.
    """
    def items(text: str) -> tuple[Counter, int]:
        """The key values of each keyed item, and how many items have no key to match on."""
        ok, value = parse_json(text)
        found = _at(value, path) if ok else None
        rows = found if isinstance(found, list) else []
        keyed = Counter(tuple(_scalar(row[f]) for f in key)
                        for row in rows if isinstance(row, dict) and all(f in row for f in key))
        return keyed, len(rows) - sum(keyed.values())

    (expected, unkeyed_expected), (got, unkeyed_got) = items(reference), items(response)
    tp = sum((expected & got).values())
    return FieldScores(tp=tp, fp=sum(got.values()) - tp + unkeyed_got, fn=sum(expected.values()) - tp + unkeyed_expected)


def item_f1(response: str, reference: str, *, path: str, key: tuple[str, ...]) -> float:
    """`item_scores(...).f1`, with an empty reference answered by an empty list scoring 1.0 (nothing to find, nothing found)."""
    scores = item_scores(response, reference, path=path, key=key)
    if scores.tp == scores.fp == scores.fn == 0:
        ok, value = parse_json(response)
        return 1.0 if ok and isinstance(_at(value, path), list) else 0.0
    return scores.f1


def field_rouge_l(response: str, reference: str, *, path: str) -> float:
    """ROUGE-L F1 of the string at `path` (e.g. 'summary') of both JSON answers; 0.0 if the response lacks it."""
    ok, value = parse_json(response)
    got = _at(value, path) if ok else None
    _, ref_value = parse_json(reference)
    expected = _at(ref_value, path)
    if not isinstance(expected, str):
        return 0.0
    return rouge_l(got, expected) if isinstance(got, str) else 0.0
