"""Filters on what the teacher writes: Self-Instruct's similarity pool, length, blacklist, decontamination.

The similarity pool keeps every pooled instruction's ROUGE-L tokens, and a candidate's bit masks
are built once and run against all of them (`adhere.eval.metrics.lcs_with_masks`), with two cheap
upper bounds skipping most pairs first; a 20-word candidate against a pool of 5,000 instructions
is about 100,000 big-integer steps, tens of milliseconds.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from adhere.data.decontam import EvalIndex, target_prompts
from adhere.eval.metrics import lcs_masks, lcs_with_masks, rouge_tokens

if TYPE_CHECKING:
    from adhere.synth.config import SynthDecontamConfig

IFEVAL_PROMPTS = Path(__file__).resolve().parent.parent / "eval" / "ifeval" / "input_data.jsonl"
WORD = re.compile(r"\w+")


class RougePool:
    """Instructions so far; `most_similar` gives the highest ROUGE-L F1 of a candidate against them."""

    def __init__(self, texts: list[str] = ()) -> None:
        self.texts: list[str] = []
        self.tokens: list[list[str]] = []
        self.counts: list[Counter[str]] = []
        for text in texts:
            self.add(text)

    def add(self, text: str) -> None:
        tokens = rouge_tokens(text)
        self.texts.append(text)
        self.tokens.append(tokens)
        self.counts.append(Counter(tokens))

    def most_similar(self, text: str, threshold: float = 1.0) -> tuple[float, str]:
        """(best ROUGE-L F1, that instruction); stops early at the first score >= `threshold`."""
        candidate = rouge_tokens(text)
        if not candidate:
            return 0.0, ""
        masks, width, mine = lcs_masks(candidate), len(candidate), Counter(candidate)
        best, best_text = 0.0, ""
        for tokens, counts, other in zip(self.tokens, self.counts, self.texts):
            total = width + len(tokens)
            # F1 = 2 * LCS / (len_a + len_b), and LCS <= the shared tokens counted with multiplicity.
            if not tokens or 2 * min(width, len(tokens)) / total <= best:
                continue
            if 2 * sum((mine & counts).values()) / total <= best:
                continue
            score = 2 * lcs_with_masks(tokens, masks, width) / total
            if score > best:
                best, best_text = score, other
                if best >= threshold:
                    break
        return best, best_text


def blacklisted(text: str, words: list[str]) -> str | None:
    """The first blacklisted word or phrase `text` contains as whole words (any case), or None."""
    seq = " " + " ".join(WORD.findall(text.casefold())) + " "
    for word in words:
        phrase = " ".join(WORD.findall(word.casefold()))
        if phrase and f" {phrase} " in seq:
            return word
    return None


def word_count(text: str) -> int:
    return len(WORD.findall(text))


def eval_index(config: SynthDecontamConfig) -> EvalIndex:
    """The n-grams of the evaluation prompts generated prompts must not share (IFEval and synth.decontam.targets)."""
    index = EvalIndex(config.ngram)
    paths = ({"synth.decontam.ifeval": IFEVAL_PROMPTS} if config.ifeval else {}) | {
        f"synth.decontam.targets[{i}]": Path(t) for i, t in enumerate(config.targets)}
    for key, path in paths.items():
        for prompt, label in target_prompts(path, key):
            index.add(prompt, label)
    return index


def contamination(index: EvalIndex, text: str) -> str | None:
    """Why `text` overlaps an evaluation prompt, or None."""
    hit = index.match(text)
    if hit is None:
        return None
    label, shared = hit
    return f"shares a {len(shared.split())}-word sequence with {label}: {shared[:80]!r}"
