"""The 25 IFEval instruction types as checkers: `(response, *, kwargs...) -> bool`.

Written from the definitions in "Instruction-Following Evaluation for Large Language Models"
(Zhou et al., 2023) and matched, where the paper leaves a detail open, to how the reference scorer
decides (checked on its published GPT-4 verdicts, see README.md). Each checker is a pure function;
its keyword-only arguments are exactly the `kwargs` keys an IFEval line may give it, and their
annotations are what `validate_kwargs` enforces when a suite loads. Checkers never raise on a
response: one that cannot be read as asked simply fails.

    >>> check("punctuation:no_comma", "No commas here.")
    True
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from adhere.eval.ifeval import text

Relation = Literal["less than", "at least"]
CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _compare(count: int, n: int, relation: Relation) -> bool:
    # IFEval's two relations: "less than" is strict, "at least" inclusive (there is no "exactly").
    return count < n if relation == "less than" else count >= n


def _search(word: str, response: str, whole_word: bool = False) -> list[str]:
    # Keywords are patterns in the reference (re.search(keyword, ...)); every public keyword is a plain
    # word, but a user's "C++" is not a valid pattern, so it falls back to the literal text.
    try:
        re.compile(word)
    except re.error:
        word = re.escape(word)
    return re.findall(rf"\b{word}\b" if whole_word else word, response, re.IGNORECASE)


# keywords:*


def keyword_existence(response: str, *, keywords: list[str]) -> bool:
    """Every keyword appears somewhere (case-insensitive, inside longer words too)."""
    return all(_search(k, response) for k in keywords)


def keyword_frequency(response: str, *, keyword: str, frequency: int, relation: Relation) -> bool:
    """The keyword appears `frequency` times ('less than' or 'at least'), case-insensitive."""
    return _compare(len(_search(keyword, response)), frequency, relation)


def forbidden_words(response: str, *, forbidden_words: list[str]) -> bool:
    """None of the words appears as a whole word (case-insensitive)."""
    return not any(_search(w, response, whole_word=True) for w in forbidden_words)


def letter_frequency(response: str, *, letter: str, let_frequency: int, let_relation: Relation) -> bool:
    """The character appears `let_frequency` times ('less than' or 'at least'), case-insensitive."""
    # Counted literally, '#' and '!' included (2 of 33 public prompts ask for those). The reference
    # replaces any non-letter with a random letter before counting; see README.md, "Decisions".
    return _compare(Counter(response.lower())[letter.strip().lower()], let_frequency, let_relation)


# language:*


def response_language(response: str, *, language: str) -> bool:
    """The whole response is in `language` (an ISO 639-1 code), by seeded langdetect."""
    detected = text.detect_language(response)
    # Nothing to detect (digits or symbols only): the reference passes it, and so do we.
    return detected is None or detected == language


# length_constraints:*


def number_sentences(response: str, *, num_sentences: int, relation: Relation) -> bool:
    """The response has `num_sentences` sentences ('less than' or 'at least'), by Punkt."""
    return _compare(text.count_sentences(response), num_sentences, relation)


def number_paragraphs(response: str, *, num_paragraphs: int) -> bool:
    """Exactly `num_paragraphs` paragraphs, separated by the markdown divider `***`."""
    paragraphs = re.split(r"\s?\*\*\*\s?", response)
    # A divider before the first or after the last paragraph is forgiven; an empty one between two is not.
    inner = paragraphs[1:-1]
    if any(not p.strip() for p in inner):
        return False
    return sum(1 for p in paragraphs if p.strip()) == num_paragraphs


def number_words(response: str, *, num_words: int, relation: Relation) -> bool:
    """The response has `num_words` words ('less than' or 'at least'), words being `\\w+` runs."""
    return _compare(text.count_words(response), num_words, relation)


def nth_paragraph_first_word(response: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    """Exactly `num_paragraphs` paragraphs (split on blank lines) and paragraph `nth_paragraph` starts with `first_word`."""
    paragraphs = response.split("\n\n")
    found = sum(1 for p in paragraphs if p.strip())
    if not 1 <= nth_paragraph <= found:
        return False
    # Indexed among all pieces, empty ones included, as the reference does: "\n\n\n\nA" has an empty first piece.
    paragraph = paragraphs[nth_paragraph - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].lstrip("'\"")
    # The word ends at its first . , ? ! ' or ": "Summary," reads as "summary". A colon is not among them, so
    # "Summary:" does not; kept so that scores compare with the reference's.
    first = re.split(r"[.,?!'\"]", word, maxsplit=1)[0].lower()
    return found == num_paragraphs and first == first_word.strip().lower()


# detectable_content:*


def number_placeholders(response: str, *, num_placeholders: int) -> bool:
    """At least `num_placeholders` placeholders in square brackets, like [address]."""
    return len(re.findall(r"\[.*?\]", response)) >= num_placeholders


def postscript(response: str, *, postscript_marker: str) -> bool:
    """A postscript starting with `postscript_marker` (P.S., P.P.S and spacing variants such as 'p. s.')."""
    marker = postscript_marker.strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\."
    else:
        pattern = r"\s*" + re.escape(marker.lower())
    return re.search(pattern + r".*$", response.lower(), re.MULTILINE) is not None


# detectable_format:*


def number_bullet_lists(response: str, *, num_bullets: int) -> bool:
    """Exactly `num_bullets` markdown bullet points (lines starting with `*` or `-`)."""
    # A `*` line counts unless a second `*` follows (that is **bold**); any `-` line counts, `---` too.
    stars = re.findall(r"^\s*\*[^*].*$", response, re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, re.MULTILINE)
    return len(stars) + len(dashes) == num_bullets


def constrained_response(response: str) -> bool:
    """The response contains one of 'My answer is yes.', 'My answer is no.', 'My answer is maybe.'."""
    return any(option in response for option in CONSTRAINED_RESPONSES)


def number_highlighted_sections(response: str, *, num_highlights: int) -> bool:
    """At least `num_highlights` markdown highlights, *like this* or **like this**, on one line."""
    singles = [h for h in re.findall(r"\*[^\n*]*\*", response) if h.strip("*").strip()]
    # **bold** also counts, once (its two `**` halves are empty single matches); see README.md, "Decisions".
    doubles = [h for h in re.findall(r"\*\*[^\n*]*\*\*", response) if h[2:-2].strip()]
    return len(singles) + len(doubles) >= num_highlights


def multiple_sections(response: str, *, section_spliter: str, num_sections: int) -> bool:
    """At least `num_sections` sections, each opened by `section_spliter` and its number ('SECTION 1')."""
    # Case-sensitive: "Section 1" does not open a SECTION. The reference's key is spelled "spliter".
    pattern = r"\s?" + re.escape(section_spliter.strip()) + r"\s?\d+\s?"
    return len(re.split(pattern, response)) - 1 >= num_sections


def json_format(response: str) -> bool:
    """The whole response is JSON, optionally inside one ``` or ```json fence."""
    body = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):  # in turn, as the reference strips them
        body = body.removeprefix(fence)
    body = body.removesuffix("```").strip()
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


def title(response: str) -> bool:
    """A title wrapped in double angular brackets on one line, like <<poem of joy>>."""
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", response))


# combination:*


def two_responses(response: str) -> bool:
    """Two different responses separated by six asterisks: ******."""
    parts = response.split("******")
    # Only the pieces before the first and after the last separator may be empty.
    if any(not p.strip() for p in parts[1:-1]):
        return False
    answers = [p.strip() for p in parts if p.strip()]
    return len(answers) == 2 and answers[0] != answers[1]


def repeat_prompt(response: str, *, prompt_to_repeat: str) -> bool:
    """The response starts by repeating `prompt_to_repeat` word for word (case-insensitive)."""
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())


# startend:*


def end_checker(response: str, *, end_phrase: str) -> bool:
    """The response ends with `end_phrase` exactly (case-insensitive; a closing quote is ignored)."""
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def quotation(response: str) -> bool:
    """The whole response is wrapped in double quotes."""
    body = response.strip()
    return len(body) > 1 and body[0] == '"' and body[-1] == '"'


# change_case:*


def capital_word_frequency(response: str, *, capital_frequency: int, capital_relation: Relation) -> bool:
    """Words in all capital letters appear `capital_frequency` times ('less than' or 'at least')."""
    # Over Treebank tokens, so "I" counts and "DON'T" is 2 capital words ("DO", "N'T").
    capitals = sum(1 for token in text.word_tokens(response) if token.isupper())
    return _compare(capitals, capital_frequency, capital_relation)


def english_capital(response: str) -> bool:
    """The response is English and in capital letters only."""
    return response.isupper() and text.detect_language(response) in ("en", None)


def english_lowercase(response: str) -> bool:
    """The response is English and in lowercase letters only."""
    return response.islower() and text.detect_language(response) in ("en", None)


# punctuation:*


def no_comma(response: str) -> bool:
    """The response contains no comma."""
    return "," not in response


INSTRUCTIONS: dict[str, Callable[..., bool]] = {
    "keywords:existence": keyword_existence,
    "keywords:frequency": keyword_frequency,
    "keywords:forbidden_words": forbidden_words,
    "keywords:letter_frequency": letter_frequency,
    "language:response_language": response_language,
    "length_constraints:number_sentences": number_sentences,
    "length_constraints:number_paragraphs": number_paragraphs,
    "length_constraints:number_words": number_words,
    "length_constraints:nth_paragraph_first_word": nth_paragraph_first_word,
    "detectable_content:number_placeholders": number_placeholders,
    "detectable_content:postscript": postscript,
    "detectable_format:number_bullet_lists": number_bullet_lists,
    "detectable_format:constrained_response": constrained_response,
    "detectable_format:number_highlighted_sections": number_highlighted_sections,
    "detectable_format:multiple_sections": multiple_sections,
    "detectable_format:json_format": json_format,
    "detectable_format:title": title,
    "combination:two_responses": two_responses,
    "combination:repeat_prompt": repeat_prompt,
    "startend:end_checker": end_checker,
    "startend:quotation": quotation,
    "change_case:capital_word_frequency": capital_word_frequency,
    "change_case:english_capital": english_capital,
    "change_case:english_lowercase": english_lowercase,
    "punctuation:no_comma": no_comma,
}


def check(instruction_id: str, response: str, **kwargs: Any) -> bool:
    """Whether `response` follows the instruction; kwargs as `validate_kwargs` returns them."""
    return INSTRUCTIONS[instruction_id](response, **kwargs)


def parameters(instruction_id: str) -> dict[str, Any]:
    """The kwargs an instruction takes, each with its type annotation."""
    checker = INSTRUCTIONS[instruction_id]
    hints = typing.get_type_hints(checker)
    return {name: hints[name] for name in list(inspect.signature(checker).parameters)[1:]}


def _type_problem(value: Any, expected: Any) -> str | None:
    if expected is Relation:
        return None if value in typing.get_args(Relation) else "'less than' or 'at least'"
    if expected is int:
        return None if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else "a whole number >= 0"
    if expected is str:
        return None if isinstance(value, str) and value.strip() else "a non-empty string"
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return None
    return "a non-empty list of non-empty strings"


def validate_kwargs(instruction_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The instruction's kwargs with null values dropped; raises ValueError saying which key is wrong."""
    if instruction_id not in INSTRUCTIONS:
        raise ValueError(f"unknown instruction id {instruction_id!r}; the 25 IFEval ids are listed in INSTRUCTIONS")
    accepted = parameters(instruction_id)
    # Hugging Face's copy of IFEval gives every instruction every kwargs key, most of them null.
    given = {k: v for k, v in kwargs.items() if v is not None}
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) or "no kwargs"
        raise ValueError(f"{instruction_id} does not take {', '.join(map(repr, unknown))}; it takes {takes}")
    missing = [k for k in accepted if k not in given]
    if missing:
        raise ValueError(f"{instruction_id} needs {', '.join(map(repr, missing))}")
    for name, expected in accepted.items():
        problem = _type_problem(given[name], expected)
        if problem:
            raise ValueError(f"{instruction_id}: {name!r} must be {problem}, got {given[name]!r}")
    if instruction_id == "keywords:letter_frequency" and len(given["letter"].strip()) != 1:
        raise ValueError(f"{instruction_id}: 'letter' must be one character, got {given['letter']!r}")
    if instruction_id == "language:response_language" and given["language"] not in text.supported_languages():
        raise ValueError(f"{instruction_id}: language {given['language']!r} is not one langdetect knows")
    return given
