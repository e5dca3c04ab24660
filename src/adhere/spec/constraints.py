"""The registry of verifiable constraints a spec can list by id.

Each checker is a pure function `(response, *, args...) -> bool`. Its
keyword-only, typed arguments are what the YAML accepts beside the id
(`{id: max_words, n: 120}`): `spec.config` builds the argument validator and the
JSON Schema from the signature, and the first docstring line is the meaning
shown to users. Checkers never raise on any string: a response that cannot be
read as required simply fails.

Where a constraint also exists in IFEval, it counts the same way (words are
`\\w+` runs, keywords match case-insensitively, bullets are `*` or `-` lines), so
a spec's pass rate and an IFEval score mean the same thing. The few places we
differ from IFEval fix its false passes and are commented where they happen.

    >>> check("max_words", "Looks good to me.", n=120)
    True
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Callable, Literal

Relation = Literal["exactly", "at least", "at most"]

# IFEval's RegexpTokenizer(r"\w+"): "don't" is 2 words, an unspaced CJK run is 1.
WORD = re.compile(r"\w+")
# A bullet is `*` or `-`, a space or tab, then text, as IFEval counts them, but never across a
# line break. IFEval's `^\s*-.*$` also counts `---` rules; a line of only `*`, `-` and spaces
# (`* * *`, `- - -`) is a rule here, and `**bold**` never matches because `*` must be followed by a space.
BULLET = re.compile(r"^[ \t]*[*-][ \t]+(?![*\- \t]*$)\S", re.MULTILINE)
# One or more blank (or whitespace-only) lines; `\s*` spans several.
BLANK_LINES = re.compile(r"\n\s*\n")
# One ```json (or unlabelled) fenced block that is the whole response, as chat models often
# add. A ```python block or prose after the fence is not JSON output.
FENCE = re.compile(r"^```(?:json)?[ \t]*\n(.*?)\n?```$", re.DOTALL | re.IGNORECASE)


def _compare(count: int, n: int, relation: Relation) -> bool:
    if relation == "at least":
        return count >= n
    if relation == "at most":
        return count <= n
    return count == n


def _lines(text: str) -> str:
    """Windows (CRLF) and old Mac (CR) line ends as `\\n`, so line-based counts agree."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _reject_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON (RFC 8259) and break strict parsers.
    raise ValueError(f"{name} is not JSON")


def parse_json(response: str) -> tuple[bool, Any]:
    """(True, value) when the response is JSON, alone or inside one fenced code block."""
    text = response.strip()
    fenced = FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        # RecursionError: about 1,000 levels of nesting exhaust the parser's stack.
        return True, json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return False, None


# Keyed by the schema as sorted JSON, since dicts are not hashable; a spec has a handful of schemas,
# so 64 covers every spec one process loads.
@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    # No format checker: `format` stays an annotation, as the JSON Schema drafts since 2019-09 say,
    # and whether jsonschema can check a format depends on which optional packages are installed.
    return jsonschema.validators.validator_for(schema)(schema)


def json_valid(response: str) -> bool:
    """The response is valid JSON (a single ```json fenced block is accepted)."""
    return parse_json(response)[0]


def json_schema(response: str, *, schema: dict) -> bool:
    """The response is JSON that validates against the JSON Schema (spec.output.schema by default)."""
    ok, value = parse_json(response)
    if not ok:
        return False
    validator = _validator(json.dumps(schema, sort_keys=True))
    try:
        return validator.is_valid(value)
    except RecursionError:  # a recursive schema walks several frames per level: 900 nested arrays overflow
        return False


def max_words(response: str, *, n: int) -> bool:
    """The response has at most `n` words."""
    return len(WORD.findall(response)) <= n


def min_words(response: str, *, n: int) -> bool:
    """The response has at least `n` words."""
    return len(WORD.findall(response)) >= n


def max_chars(response: str, *, n: int) -> bool:
    """The response is at most `n` characters long."""
    return len(response) <= n


def lowercase(response: str) -> bool:
    """The response has no uppercase letters."""
    return response == response.lower()


def uppercase(response: str) -> bool:
    """The response has no lowercase letters."""
    return response == response.upper()


def no_comma(response: str) -> bool:
    """The response contains no comma."""
    return "," not in response


def contains_keywords(response: str, *, keywords: list[str]) -> bool:
    """The response contains every keyword (case-insensitive)."""
    # Substrings, as IFEval's re.search: "cat" is in "category". Escaped, unlike IFEval, so "C++" is literal.
    return all(re.search(re.escape(k), response, re.IGNORECASE) for k in keywords)


def forbidden_words(response: str, *, words: list[str]) -> bool:
    """The response uses none of the words as a whole word (case-insensitive)."""
    # IFEval's \bword\b never matches after "C++" (no boundary between "+" and a space), a false
    # pass; "no word character either side" is the same test for plain words. A blank word is ignored,
    # since it would otherwise fail every response.
    return not any(
        re.search(rf"(?<!\w){re.escape(w)}(?!\w)", response, re.IGNORECASE) for w in words if w.strip()
    )


def starts_with(response: str, *, text: str) -> bool:
    """The response starts with `text` (case-insensitive, surrounding space ignored)."""
    return response.strip().lower().startswith(text.strip().lower())


def ends_with(response: str, *, text: str) -> bool:
    """The response ends with `text` (case-insensitive, surrounding space ignored)."""
    # IFEval's end_checker also strips '"' off the response; we don't, so `text` may itself end in a quote.
    return response.strip().lower().endswith(text.strip().lower())


def num_bullets(response: str, *, n: int, relation: Relation = "exactly") -> bool:
    """The response has `n` bullet points (lines starting with '* ' or '- '); `relation` may be 'at least' or 'at most'."""
    return _compare(len(BULLET.findall(_lines(response))), n, relation)


def num_paragraphs(response: str, *, n: int, relation: Relation = "exactly") -> bool:
    """The response has `n` paragraphs, separated by blank lines; `relation` may be 'at least' or 'at most'."""
    paragraphs = [p for p in BLANK_LINES.split(_lines(response)) if p.strip()]
    return _compare(len(paragraphs), n, relation)


def regex(response: str, *, pattern: str) -> bool:
    """The response matches the regular expression `pattern` somewhere (Python syntax)."""
    # A bad pattern is a config error, caught when the spec loads; responses never raise.
    return re.search(pattern, response) is not None


CHECKERS: dict[str, Callable[..., bool]] = {
    "json_schema": json_schema,
    "json_valid": json_valid,
    "max_words": max_words,
    "min_words": min_words,
    "max_chars": max_chars,
    "lowercase": lowercase,
    "uppercase": uppercase,
    "no_comma": no_comma,
    "contains_keywords": contains_keywords,
    "forbidden_words": forbidden_words,
    "starts_with": starts_with,
    "ends_with": ends_with,
    "num_bullets": num_bullets,
    "num_paragraphs": num_paragraphs,
    "regex": regex,
}


def check(constraint_id: str, response: str, **kwargs: Any) -> bool:
    """Whether `response` meets the constraint `constraint_id` with these arguments."""
    return CHECKERS[constraint_id](response, **kwargs)


def describe(constraint_id: str) -> str:
    """The constraint's meaning in one line, for people."""
    return (CHECKERS[constraint_id].__doc__ or constraint_id).strip().splitlines()[0]
