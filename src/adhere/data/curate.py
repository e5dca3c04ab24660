"""Curation steps over canonical records: normalisation, exact and near dedup, quality heuristics.

Each step takes the list of kept records and returns the records it keeps plus
a `Rejection` for each one it drops, naming the record it duplicates where
there is one. Records carry `meta.source` and `meta.row`, so a reason can say
"same as data.jsonl line 12".
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any, Callable

from adhere.data.config import DedupConfig, QualityConfig
from adhere.data.records import Rejection, prompt_text, response_text

Record = dict[str, Any]
Dropped = list[tuple[Record, Rejection]]

# Control characters other than tab and newline never carry meaning in instruction data and confuse tokenizers.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
WORD = re.compile(r"\w+")
REFUSALS = re.compile(
    r"\b(as an ai( language)? model|i('m| am) (sorry|unable|not able),? (but )?i (can('|no)t|am unable)"
    r"|i can('|no)t (help|assist) with (that|this)|i('m| am) just an ai)\b",
    re.IGNORECASE,
)
MIN_WORDS_FOR_REPETITION = 30
# Candidate threshold below near_threshold: 0.2 lifts recall of pairs just above 0.8 from ~80% to
# over 99% in bench/data_bench.py, at a few percent more time.
LSH_MARGIN = 0.2  # shorter responses repeat 3-grams naturally ("the line ... the line")


def normalize(record: Record) -> Record:
    """Unicode NFC, control characters removed, surrounding whitespace trimmed, in every message."""
    for message in record["messages"]:
        text = unicodedata.normalize("NFC", message["content"])
        message["content"] = CONTROL.sub("", text.replace("\r\n", "\n")).strip()
    return record


def where(record: Record) -> str:
    """'file.jsonl line 12': where a record came from, for reasons."""
    meta = record["meta"]
    return f"{meta['source'].rsplit('/', 1)[-1]} {meta['row']}"


def _key_text(record: Record) -> str:
    return " ".join(WORD.findall(f"{prompt_text(record)}\n{response_text(record)}".casefold()))


def exact_dedup(records: list[Record], key_text: Callable[[Record], str] = _key_text,
                what: str = "prompt and response") -> tuple[list[Record], Dropped]:
    """Keep the first of records whose case-folded words of prompt and response (`key_text`) are equal."""
    seen: dict[str, Record] = {}
    kept, dropped = [], []
    for record in records:
        key = hashlib.sha1(key_text(record).encode()).hexdigest()
        if key in seen:
            dropped.append((record, Rejection("exact_duplicate", f"same {what} as {where(seen[key])}")))
        else:
            seen[key] = record
            kept.append(record)
    return kept, dropped


def shingles(text: str, size: int) -> set[bytes]:
    """Word `size`-grams of a text; a text shorter than `size` words is one shingle."""
    words = WORD.findall(text.casefold())
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


def near_dedup(records: list[Record], cfg: DedupConfig, seed: int = 0) -> tuple[list[Record], Dropped]:
    """Drop records whose shingle set has Jaccard >= threshold with an earlier kept record.

    MinHash LSH proposes candidates in near-linear time; each candidate is then
    confirmed with the exact Jaccard of the two shingle sets, so the LSH's false
    positives never drop a row; bench/data_bench.py measures its recall.
    """
    from datasketch import MinHash, MinHashLSH

    sets = [shingles(_key_text(r), cfg.shingle) for r in records]
    hashes = MinHash.bulk(sets, num_perm=cfg.num_perm, seed=seed)
    # LSH tuned to the threshold itself finds only about half the pairs that sit just above it
    # (its S-curve is centred there); candidates from a lower threshold are confirmed exactly below,
    # so recall rises at the cost of a few more set comparisons, never of false positives.
    lsh = MinHashLSH(threshold=max(0.3, cfg.near_threshold - LSH_MARGIN), num_perm=cfg.num_perm)
    kept, dropped = [], []
    for i, (record, minhash) in enumerate(zip(records, hashes)):
        best, best_j = None, 0.0
        for j in lsh.query(minhash):
            jaccard = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
            if jaccard >= cfg.near_threshold and jaccard > best_j:
                best, best_j = j, jaccard
        if best is not None:
            reason = f"Jaccard {best_j:.2f} (>= {cfg.near_threshold}) with {where(records[best])}"
            dropped.append((record, Rejection("near_duplicate", reason)))
        else:
            lsh.insert(i, minhash)
            kept.append(record)
    return kept, dropped


def quality_problem(record: Record, cfg: QualityConfig) -> Rejection | None:
    """The first quality heuristic a record fails, or None."""
    response = response_text(record)
    words = WORD.findall(response.casefold())
    if len(words) < cfg.min_response_words:
        return Rejection("too_short", f"response has {len(words)} words, fewer than {cfg.min_response_words}")
    if len(words) > cfg.max_response_words:
        return Rejection("too_long", f"response has {len(words)} words, more than {cfg.max_response_words}")
    if cfg.refusals and (match := REFUSALS.search(response)):
        return Rejection("refusal", f"response is a refusal or boilerplate ({match.group(0)!r})")
    prompt_words = set(WORD.findall(prompt_text(record).casefold()))
    response_words = set(words)
    overlap = len(prompt_words & response_words) / max(1, len(prompt_words | response_words))
    if overlap >= cfg.copy_threshold:
        return Rejection("copies_prompt", f"response repeats the prompt (word overlap {overlap:.2f})")
    if len(words) >= MIN_WORDS_FOR_REPETITION:
        grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
        repeated = 1 - len(set(grams)) / len(grams)
        if repeated >= cfg.max_repeated_ngrams:
            return Rejection("repetitive", f"{repeated:.0%} of the response's word 3-grams are repeats")
    return None


def quality_filter(records: list[Record], cfg: QualityConfig) -> tuple[list[Record], Dropped]:
    """Drop records that fail a quality heuristic."""
    kept, dropped = [], []
    for record in records:
        problem = quality_problem(record, cfg) if cfg.enabled else None
        if problem:
            dropped.append((record, problem))
        else:
            kept.append(record)
    return kept, dropped


def token_filter(records: list[Record], tokenizer: Any, max_length: int, model_name: str) -> tuple[list[Record], Dropped]:
    """Drop records too long for training or with nothing to train; note token counts in meta.

    Rendering uses the same function as training (`models.masking.render`), so a
    kept record is one the trainer will use as it is, never silently truncated.
    """
    kept, dropped = [], []
    for record in records:
        rendered = rendered_tokens(record["messages"], tokenizer, max_length, model_name)
        if isinstance(rendered, Rejection):
            dropped.append((record, rendered))
        else:
            record["meta"].update(tokens=len(rendered.input_ids), trained_tokens=rendered.trained_tokens)
            kept.append(record)
    return kept, dropped


def rendered_tokens(messages: list[dict[str, Any]], tokenizer: Any, max_length: int, model_name: str,
                    what: str = "") -> Any:
    """The chat rendered as training renders it, or the Rejection (`what` prefixes its reason: 'the chosen side: ')."""
    from adhere.models.masking import MaskError, render

    try:
        rendered = render(tokenizer, messages)
    except MaskError as exc:
        return Rejection("template_error", f"{what}{exc}")
    tokens = len(rendered.input_ids)
    if tokens > max_length:
        reason = f"{what}{tokens} tokens under {model_name}'s chat template, more than train.max_length={max_length}"
        return Rejection("too_many_tokens", reason)
    if rendered.trained_tokens == 0:
        return Rejection("no_trained_tokens", f"{what}no token would be trained after loss masking")
    return rendered
