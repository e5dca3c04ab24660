"""The registry of verifiable constraints a spec can list by id.

Each checker is a pure function `(response, *, args...) -> bool`. Its
keyword-only, typed arguments are what the YAML accepts beside the id
(`{id: max_words, n: 120}`): `spec.config` builds the argument validator and the
JSON Schema from the signature, and the first docstring line is the meaning
shown to users. Checkers never raise on any string: a response that cannot be
read as required simply fails.

Where a constraint also exists in IFEval, it counts the same way (words are
`\\w+` runs, keywords match case-insensitively, bullets are `*` or `-` lines), so
a spec's pass rate and an IFEval score mean the same thing.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Callable, Literal

Relation = Literal["exactly", "at least", "at most"]

WORD = re.compile(r"\w+")
# A bullet is `*` or `-` then a space, as IFEval counts them; `**bold**` and `---` rules are not bullets.
BULLET = re.compile(r"^\s*[*-]\s+\S", re.MULTILINE)
BLANK_LINES = re.compile(r"\n\s*\n")
# One fenced block around the whole response, as chat models often add: ```json ... ```.
FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*?)\n?```$", re.DOTALL)


def _compare(count: int, n: int, relation: Relation) -> bool:
    if relation == "at least":
        return count >= n
    if relation == "at most":
        return count <= n
    return count == n


def parse_json(response: str) -> tuple[bool, Any]:
    """(True, value) when the response is JSON, alone or inside one fenced code block."""
    text = response.strip()
    fenced = FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return True, json.loads(text)
    except (ValueError, RecursionError):
        return False, None


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def json_valid(response: str) -> bool:
    """The response is valid JSON (a single ```json fenced block is accepted)."""
    return parse_json(response)[0]


def json_schema(response: str, *, schema: dict) -> bool:
    """The response is JSON that validates against the JSON Schema (spec.output.schema by default)."""
    ok, value = parse_json(response)
    if not ok:
        return False
    return _validator(json.dumps(schema, sort_keys=True)).is_valid(value)


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
    return all(re.search(re.escape(k), response, re.IGNORECASE) for k in keywords)


def forbidden_words(response: str, *, words: list[str]) -> bool:
    """The response uses none of the words as a whole word (case-insensitive)."""
    return not any(re.search(rf"\b{re.escape(w)}\b", response, re.IGNORECASE) for w in words)


def starts_with(response: str, *, text: str) -> bool:
    """The response starts with `text` (case-insensitive, surrounding space ignored)."""
    return response.strip().lower().startswith(text.strip().lower())


def ends_with(response: str, *, text: str) -> bool:
    """The response ends with `text` (case-insensitive, surrounding space ignored)."""
    return response.strip().lower().endswith(text.strip().lower())


def num_bullets(response: str, *, n: int, relation: Relation = "exactly") -> bool:
    """The response has `n` bullet points (lines starting with '* ' or '- '); `relation` may be 'at least' or 'at most'."""
    bullets = [m for m in BULLET.finditer(response) if not _is_rule_or_bold(response, m.start())]
    return _compare(len(bullets), n, relation)


def _is_rule_or_bold(text: str, start: int) -> bool:
    line = text[start:].lstrip().split("\n", 1)[0]
    return line.startswith("**") or line.startswith("--") or set(line.strip()) <= {"*", "-", " "}


def num_paragraphs(response: str, *, n: int, relation: Relation = "exactly") -> bool:
    """The response has `n` paragraphs, separated by blank lines; `relation` may be 'at least' or 'at most'."""
    text = response.replace("\r\n", "\n")
    paragraphs = [p for p in BLANK_LINES.split(text) if p.strip()]
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
