"""IFEval: verifiable instruction following, scored offline (the `ifeval` suite of `adhere eval`).

    >>> from adhere.eval.ifeval import load_suite, score, summarize
    >>> prompts = load_suite()                          # 541 prompts, 834 instructions, 25 types
    >>> summary = summarize(score(prompts, responses))  # doctest: +SKIP

See README.md beside this file for what strict and loose mean and how we differ from the reference.
"""

from adhere.eval.ifeval.instructions import INSTRUCTIONS, check, validate_kwargs
from adhere.eval.ifeval.suite import (
    BUILTIN_SUITE,
    IfevalPrompt,
    PromptVerdict,
    load_suite,
    load_suite_lenient,
    loose_variants,
    prompt_level,
    reference_lines,
    score,
    score_response,
    summarize,
    write_reference_jsonl,
)

__all__ = [
    "BUILTIN_SUITE",
    "INSTRUCTIONS",
    "IfevalPrompt",
    "PromptVerdict",
    "check",
    "load_suite",
    "load_suite_lenient",
    "loose_variants",
    "prompt_level",
    "reference_lines",
    "score",
    "score_response",
    "summarize",
    "validate_kwargs",
    "write_reference_jsonl",
]
