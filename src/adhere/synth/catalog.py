"""The constraints synthetic prompts can carry: how to draw arguments, how to say them, what they clash with.

    from adhere.synth.catalog import draw
    chosen = draw("ifeval", rng, base_prompt, count=2)   # [Attached(id, kwargs, phrase), ...]
    passed = [a.check(response) for a in chosen]

Two registries: 'ifeval' holds the 25 IFEval instruction types, checked by adhere's strict IFEval
scorer; 'spec' holds the spec's checkers that need no user argument (json_schema and regex do).
A kind carries tags; two kinds that share a tag are never attached together, which is how
contradictions (lowercase with uppercase, JSON with bullets or with "no commas") are skipped.

The phrasings, keywords, end phrases, first words, section names and languages here are written to
differ from IFEval's test prompts (tests/test_synth_catalog.py checks that no 6-word sequence and no
keyword is shared), so that a gain on IFEval after training on this data is generalization to new
wordings, not memorized ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# None of these words is an IFEval keyword, forbidden word or first word (a test checks).
KEYWORDS = [
    "lantern", "harbor", "compass", "meadow", "velvet", "orbit", "pepper", "granite", "whistle", "canyon",
    "ribbon", "marble", "falcon", "tulip", "glacier", "puzzle", "saddle", "copper", "thunder", "walnut",
    "basket", "clover", "anchor", "mosaic", "violet", "kettle", "beacon", "cedar", "ember", "quartz",
]
# Filler words a reply is likely to use, so forbidding them is a real constraint.
FILLERS = ["very", "really", "thing", "things", "also", "great", "just", "important", "basically", "simply",
           "actually", "many", "some", "often"]
END_PHRASES = ["That wraps it up.", "Thanks for reading along.", "Over and out.", "Hope this helps you decide.",
               "Questions are always welcome.", "Until next time."]
FIRST_WORDS = ["notably", "today", "overall", "meanwhile", "honestly", "first", "finally", "consider"]
SECTION_NAMES = ["PART", "Phase", "Chapter", "STAGE"]
LANGUAGES = {"fr": "French", "es": "Spanish", "nl": "Dutch", "pl": "Polish", "tr": "Turkish", "id": "Indonesian"}
LETTERS = "bdfhkrsuv"
MARKERS = ["P.S.", "P.P.S"]


def _q(word: str) -> str:
    return f'"{word}"'


def _pair(words: list[str]) -> str:
    return f"{_q(words[0])} and {_q(words[1])}" if len(words) == 2 else _q(words[0])


# Phrasings shared by the two registries where the constraint is the same.
NO_COMMA = [
    lambda a: "Do not use a single comma anywhere.",
    lambda a: "Commas are off-limits in this reply.",
    lambda a: "Write this without one comma; use other punctuation.",
]
LOWERCASE = [
    lambda a: "Use only lowercase letters throughout, with no capitals anywhere.",
    lambda a: "Type everything in small letters; not one uppercase character.",
]
UPPERCASE = [
    lambda a: "Write everything in uppercase English letters.",
    lambda a: "Every letter you type must be a capital.",
]
FORBIDDEN = [
    lambda a: f"Steer clear of the words {_pair(a['words'])}.",
    lambda a: f"Never write the words {_pair(a['words'])} anywhere in the reply.",
]
KEYWORDS_IN = [
    lambda a: f"Work the words {_pair(a['keywords'])} into your reply.",
    lambda a: f"Somewhere in the text mention {_pair(a['keywords'])}.",
]
END_WITH = [
    lambda a: f"Finish with the exact sentence {_q(a['text'])} and write nothing after it.",
    lambda a: f"The last words of the reply must be {_q(a['text'])}.",
]


@dataclass(frozen=True)
class Kind:
    """One attachable constraint: its checker id, tags that clash, an argument sampler and phrasings."""

    id: str
    tags: frozenset[str]
    sample: Callable[[random.Random, str], dict[str, Any]]  # (rng, base prompt) -> the checker's kwargs
    phrasings: tuple[Callable[[dict[str, Any]], str], ...]


@dataclass(frozen=True)
class Attached:
    """A constraint drawn for one prompt: checker id, arguments and the sentence that asks for it."""

    registry: str
    id: str
    kwargs: dict[str, Any]
    phrase: str

    def check(self, response: str) -> bool:
        """Whether `response` meets the constraint under the strict checker."""
        if self.registry == "ifeval":
            from adhere.eval.ifeval.instructions import check

            return check(self.id, response, **self.kwargs)
        from adhere.spec.constraints import check as spec_check

        return spec_check(self.id, response, **self.kwargs)


def _kind(id: str, tags: str, sample: Callable[[random.Random, str], dict[str, Any]], *phrasings: Callable) -> Kind:
    return Kind(id, frozenset(tags.split()), sample, tuple(phrasings))


def _none(rng: random.Random, prompt: str) -> dict[str, Any]:
    return {}


def _relation(rng: random.Random, low: tuple[int, int], high: tuple[int, int], count: str, relation: str) -> dict:
    """IFEval's count kwargs: 'less than' a number from `low`, or 'at least' one from `high`."""
    if rng.random() < 0.5:
        return {count: rng.randint(*low), relation: "less than"}
    return {count: rng.randint(*high), relation: "at least"}


def _count_phrase(a: dict, count: str, relation: str, fewer: str, more: str) -> str:
    n = a[count]
    return fewer.format(n=n, m=n - 1) if a[relation] == "less than" else more.format(n=n)


# Tags: 'json' marks what a JSON-only reply cannot show, 'english' what needs an English reply,
# 'case' letter case, 'length' word and sentence counts, 'start'/'end' what the reply opens or closes with.
IFEVAL_KINDS = [
    _kind("keywords:existence", "english", lambda r, p: {"keywords": r.sample(KEYWORDS, 2)}, *KEYWORDS_IN),
    _kind("keywords:frequency", "english",
          lambda r, p: {"keyword": r.choice(KEYWORDS), **_relation(r, (2, 3), (2, 4), "frequency", "relation")},
          lambda a: _count_phrase(a, "frequency", "relation", f"Mention {_q(a['keyword'])} fewer than {{n}} times.",
                                  f"Use the word {_q(a['keyword'])} {{n}} or more times."),
          lambda a: _count_phrase(a, "frequency", "relation", f"Keep the count of {_q(a['keyword'])} below {{n}}.",
                                  f"The word {_q(a['keyword'])} has to occur no fewer than {{n}} times.")),
    _kind("keywords:forbidden_words", "forbidden", lambda r, p: {"forbidden_words": r.sample(FILLERS, 2)},
          *[lambda a, f=f: f({"words": a["forbidden_words"]}) for f in FORBIDDEN]),
    _kind("keywords:letter_frequency", "english letters",
          lambda r, p: {"letter": r.choice(LETTERS), **_relation(r, (3, 6), (3, 10), "let_frequency", "let_relation")},
          lambda a: _count_phrase(a, "let_frequency", "let_relation",
                                  f"Use the letter {_q(a['letter'])} fewer than {{n}} times in total.",
                                  f"The letter {_q(a['letter'])} must turn up {{n}} times or more.")),
    _kind("language:response_language", "english case",
          lambda r, p: {"language": r.choice(sorted(LANGUAGES))},
          lambda a: f"Reply only in {LANGUAGES[a['language']]}, with no English at all.",
          lambda a: f"Write the whole answer in {LANGUAGES[a['language']]}."),
    _kind("length_constraints:number_sentences", "length",
          lambda r, p: _relation(r, (3, 8), (3, 10), "num_sentences", "relation"),
          lambda a: _count_phrase(a, "num_sentences", "relation", "Keep it brief: at most {m} sentences in total.",
                                  "Write {n} sentences or more."),
          lambda a: _count_phrase(a, "num_sentences", "relation", "Use fewer than {n} sentences.",
                                  "The reply needs no fewer than {n} sentences.")),
    _kind("length_constraints:number_paragraphs", "paragraphs json",
          lambda r, p: {"num_paragraphs": r.randint(2, 4)},
          lambda a: f"Split the reply into exactly {a['num_paragraphs']} parts, with a line holding only *** between "
                    "neighbouring parts.",
          lambda a: f"Structure: {a['num_paragraphs']} paragraphs, divided from one another by a *** line."),
    _kind("length_constraints:number_words", "length",
          lambda r, p: _relation(r, (40, 150), (50, 200), "num_words", "relation"),
          lambda a: _count_phrase(a, "num_words", "relation", "Stay below {n} words.", "Aim for {n} words at minimum."),
          lambda a: _count_phrase(a, "num_words", "relation", "The reply must be shorter than {n} words.",
                                  "Write no fewer than {n} words.")),
    _kind("length_constraints:nth_paragraph_first_word", "paragraphs json english start",
          lambda r, p: _nth_paragraph(r),
          lambda a: f"Organize the answer as {a['num_paragraphs']} blocks of text separated by blank lines, and "
                    f"begin block number {a['nth_paragraph']} with the word {_q(a['first_word'])}."),
    _kind("detectable_content:number_placeholders", "placeholders",
          lambda r, p: {"num_placeholders": r.randint(1, 4)},
          lambda a: f"Leave {a['num_placeholders']} or more fill-in slots in square brackets, for example [date].",
          lambda a: f"Include at least {a['num_placeholders']} bracketed blanks like [city] for the reader to fill."),
    _kind("detectable_content:postscript", "end json", lambda r, p: {"postscript_marker": r.choice(MARKERS)},
          lambda a: f"Close with a short afterthought that begins with {a['postscript_marker']}",
          lambda a: f"Once the answer is done, append a brief aside that opens with {a['postscript_marker']}"),
    _kind("detectable_format:number_bullet_lists", "bullets json", lambda r, p: {"num_bullets": r.randint(2, 6)},
          lambda a: f"Present the content as exactly {a['num_bullets']} bullet points, each line opening with '* '.",
          lambda a: f"Give {a['num_bullets']} points as a markdown list of '* ' items, and no other list lines."),
    _kind("detectable_format:constrained_response", "whole json english length", _none,
          lambda a: 'Settle it with one of these three sentences: "My answer is yes." (agree), "My answer is no." '
                    '(disagree) or "My answer is maybe." (unsure).'),
    _kind("detectable_format:number_highlighted_sections", "highlights json",
          lambda r, p: {"num_highlights": r.randint(1, 4)},
          lambda a: f"Emphasize {a['num_highlights']} or more phrases by putting them between single asterisks, "
                    "like *this one*."),
    _kind("detectable_format:multiple_sections", "paragraphs json",
          lambda r, p: {"section_spliter": r.choice(SECTION_NAMES), "num_sections": r.randint(2, 4)},
          lambda a: f"Divide your answer into {a['num_sections']} sections labelled {a['section_spliter']} 1, "
                    f"{a['section_spliter']} 2 and so on."),
    _kind("detectable_format:json_format", "json whole comma bullets paragraphs highlights start end title", _none,
          lambda a: "Format the entire reply as valid JSON and nothing else.",
          lambda a: "Return only a JSON object, with no prose outside it."),
    _kind("detectable_format:title", "title json", _none,
          lambda a: "Give the answer a heading wrapped in double angle brackets, for instance <<A Quiet Morning>>."),
    _kind("combination:two_responses", "whole json paragraphs", _none,
          lambda a: "Offer two distinct versions of the answer with a line of six asterisks (******) between them "
                    "and nowhere else."),
    _kind("combination:repeat_prompt", "start english json", lambda r, p: {"prompt_to_repeat": p},
          lambda a: "Start by copying my request above word for word (just the request, without these rules), "
                    "then answer it."),
    _kind("startend:end_checker", "end json english", lambda r, p: {"end_phrase": r.choice(END_PHRASES)},
          *[lambda a, f=f: f({"text": a["end_phrase"]}) for f in END_WITH]),
    _kind("startend:quotation", "whole start end json", _none,
          lambda a: "Put the whole reply inside one pair of double quotes."),
    _kind("change_case:capital_word_frequency", "case",
          lambda r, p: _relation(r, (2, 5), (2, 6), "capital_frequency", "capital_relation"),
          lambda a: _count_phrase(a, "capital_frequency", "capital_relation", "Use fewer than {n} all-caps words.",
                                  "Include {n} or more words written entirely in CAPITALS for emphasis.")),
    _kind("change_case:english_capital", "case english", _none, *UPPERCASE),
    _kind("change_case:english_lowercase", "case english", _none, *LOWERCASE),
    _kind("punctuation:no_comma", "comma", _none, *NO_COMMA),
]


def _nth_paragraph(rng: random.Random) -> dict[str, Any]:
    n = rng.randint(2, 4)
    return {"num_paragraphs": n, "nth_paragraph": rng.randint(1, n), "first_word": rng.choice(FIRST_WORDS)}


def _spec_count(rng: random.Random, low: int, high: int) -> dict[str, Any]:
    return {"n": rng.randint(low, high), "relation": rng.choice(["exactly", "at least", "at most"])}


SPEC_KINDS = [
    _kind("max_words", "length", lambda r, p: {"n": r.randint(40, 150)},
          lambda a: f"Stay within {a['n']} words.", lambda a: f"Use {a['n']} words or fewer."),
    _kind("min_words", "length", lambda r, p: {"n": r.randint(50, 200)},
          lambda a: f"Aim for {a['n']} words at minimum.", lambda a: f"Write no fewer than {a['n']} words."),
    _kind("max_chars", "length", lambda r, p: {"n": r.randint(300, 1000)},
          lambda a: f"Keep the reply within {a['n']} characters."),
    _kind("lowercase", "case", _none, *LOWERCASE),
    _kind("uppercase", "case", _none, *UPPERCASE),
    _kind("no_comma", "comma", _none, *NO_COMMA),
    _kind("contains_keywords", "english", lambda r, p: {"keywords": r.sample(KEYWORDS, 2)}, *KEYWORDS_IN),
    _kind("forbidden_words", "forbidden", lambda r, p: {"words": r.sample(FILLERS, 2)}, *FORBIDDEN),
    _kind("starts_with", "start json", lambda r, p: {"text": r.choice(FIRST_WORDS).capitalize()},
          lambda a: f"Open the reply with the word {_q(a['text'])}."),
    _kind("ends_with", "end json", lambda r, p: {"text": r.choice(END_PHRASES)}, *END_WITH),
    _kind("num_bullets", "bullets json", lambda r, p: _spec_count(r, 2, 6),
          lambda a: f"Use {a['relation']} {a['n']} bullet points, each line opening with '- '."),
    _kind("num_paragraphs", "paragraphs json", lambda r, p: _spec_count(r, 2, 4),
          lambda a: f"Write {a['relation']} {a['n']} paragraphs separated by blank lines."),
    _kind("json_valid", "json whole comma bullets paragraphs start end", _none,
          lambda a: "Format the entire reply as valid JSON and nothing else."),
]
REGISTRIES = {"ifeval": {k.id: k for k in IFEVAL_KINDS}, "spec": {k.id: k for k in SPEC_KINDS}}


def registry(name: str) -> list[str]:
    """The constraint ids a registry offers, in catalog order."""
    return list(REGISTRIES[name])


def compatible(registry_name: str, a: str, b: str) -> bool:
    """Whether two constraint ids may be attached together (different ids, no shared tag)."""
    kinds = REGISTRIES[registry_name]
    return a != b and not kinds[a].tags & kinds[b].tags


def draw(registry_name: str, rng: random.Random, prompt: str, count: int, allowed: list[str] | None = None) -> list[Attached]:
    """Up to `count` mutually compatible constraints with sampled arguments and phrasings (fewer if none fit)."""
    kinds = REGISTRIES[registry_name]
    pool = [k for k in kinds if not allowed or k in allowed]
    chosen: list[Attached] = []
    while len(chosen) < count:
        fits = [k for k in pool if all(compatible(registry_name, k, c.id) for c in chosen)]
        if not fits:
            break
        kind = kinds[rng.choice(fits)]
        kwargs = kind.sample(rng, prompt)
        chosen.append(Attached(registry_name, kind.id, kwargs, rng.choice(kind.phrasings)(kwargs)))
    return chosen
