"""The `eval` section of adhere.yaml: how instruction following is measured (step 5)."""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationInfo, field_validator, model_validator

from adhere.config_fields import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Section,
    error_at,
    resolve_path,
)
from adhere.generation.refs import ModelRef

Suite = Literal["held_out", "ifeval", "judge", "custom"]
class ItemF1(Section):
    """F1 of the items of a list in JSON answers, each item identified by some of its fields."""

    list: str
    """Dotted path of the list in the answer, e.g. 'suggestions'."""
    key: list[str]
    """Fields that identify an item, e.g. [line, rule]; other fields are ignored."""

    @field_validator("key")
    @classmethod
    def _some_key(cls, value: list[str]) -> list[str]:
        if not value:
            raise error_at((), "name at least one field that identifies an item, e.g. [line, rule]")
        return value


class JudgeConfig(Section):
    """The LLM judge: scores each response 1-5 against spec.rubric and compares models pairwise."""

    model: ModelRef | None = None
    """The judge model (any ModelRef); required by the 'judge' suite."""
    max_new_tokens: PositiveInt = 256
    """Longest verdict the judge may write."""


class EvalConfig(Section):
    """Base vs tuned on held-out instructions, IFEval, a judge and your own acceptance prompts."""

    models: list[ModelRef] = [ModelRef(name="base", kind="base"), ModelRef(name="tuned", kind="tuned")]
    """Models to evaluate; the first is the baseline the others are compared with."""
    suites: list[Suite] = ["held_out"]
    """'held_out': the data's eval split; 'ifeval': IFEval prompts; 'judge': rubric scores and win rate by an LLM
    judge on the held-out prompts; 'custom': your own prompts with per-prompt constraints (custom_file)."""
    ifeval_file: str = ""
    """IFEval-format JSONL; empty means the 541 public IFEval prompts shipped with adhere."""
    custom_file: str = ""
    """JSONL of {"id", "prompt" or "messages", "constraints": [{id: ..., ...}], "reference"?} for the 'custom' suite."""
    max_prompts: NonNegativeInt = 0
    """Use at most this many prompts per suite (the first ones, in file order); 0 means all."""
    max_new_tokens: PositiveInt = 512
    """Longest response to generate."""
    temperature: NonNegativeFloat = 0.0
    """0 is greedy decoding; above 0 samples with `seed`."""
    top_p: Fraction = 1.0
    """Nucleus sampling mass when temperature > 0; the most likely token always stays, so 0 is greedy."""
    batch_size: PositiveInt = 8
    """Prompts generated together by a local model."""
    seed: int = 0
    """Seed for sampling and for the bootstrap confidence intervals."""
    bootstrap_resamples: PositiveInt = 2000
    """Resamples for each 95% confidence interval."""
    list_key: list[str] = []
    """For JSON outputs: fields that identify the items of a list when comparing with the reference, e.g.
    [line, rule] matches review suggestions on (line, rule) whatever their order; empty: by position."""
    item_f1: dict[str, ItemF1] = {}
    """Extra JSON metrics by name: F1 of list items on their key fields, e.g.
    {suggestion: {list: suggestions, key: [line, rule]}, rule: {list: suggestions, key: [rule]}}."""
    rouge_fields: list[str] = []
    """JSON fields (dotted paths) whose text is scored with ROUGE-L against the reference's, e.g. [summary]."""
    judge: JudgeConfig = JudgeConfig()

    @field_validator("ifeval_file", "custom_file")
    @classmethod
    def _absolute(cls, value: str, info: ValidationInfo) -> str:
        return resolve_path(value, info) if value else value

    @field_validator("models")
    @classmethod
    def _distinct(cls, value: list[ModelRef]) -> list[ModelRef]:
        if not value:
            raise error_at((), "list at least one model, e.g. [base, tuned]")
        names = [m.name for m in value]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise error_at((i, "name"), f"model name {name!r} is used twice; names label the reports")
        return value

    @model_validator(mode="after")
    def _suite_inputs(self) -> EvalConfig:
        if "custom" in self.suites and not self.custom_file:
            raise error_at(("custom_file",), "the 'custom' suite needs custom_file (a JSONL of prompts and constraints)")
        if "judge" in self.suites and self.judge.model is None:
            raise error_at(("judge", "model"), "the 'judge' suite needs a judge model, e.g. {name: judge, kind: endpoint, "
                           "endpoint: {base_url: http://localhost:8000/v1, model: ...}}")
        return self
