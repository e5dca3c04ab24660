"""The `data` section of adhere.yaml: where the instruction data comes from (step 2)."""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationInfo, field_validator, model_validator

from adhere.config_fields import Fraction, PositiveFloat, PositiveInt, Section, error_at, resolve_path

FORMATS = ("auto", "alpaca", "messages", "sharegpt", "prompt_completion", "columns")


class Source(Section):
    """One input file or saved dataset folder."""

    path: str
    """A .jsonl, .json, .csv or .parquet file, or a saved Hugging Face dataset folder (relative to adhere.yaml)."""
    format: Literal["auto", "alpaca", "messages", "sharegpt", "prompt_completion", "columns"] = "auto"
    """Row format; 'auto' detects it from the columns."""
    columns: dict[str, str] = {}
    """For format 'columns': which source column holds each field, e.g. {instruction: question, output: answer}."""
    weight: PositiveFloat = 1.0
    """Relative sampling weight when several sources are mixed."""
    max_rows: PositiveInt | None = None
    """Keep at most this many rows from this source."""

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str, info: ValidationInfo) -> str:
        return resolve_path(value, info)

    @model_validator(mode="after")
    def _columns_need_format(self) -> Source:
        if self.format == "columns" and not self.columns:
            raise error_at(("columns",), "format 'columns' needs a mapping, e.g. {instruction: question, output: answer}")
        if self.columns and self.format not in ("columns", "auto"):
            raise error_at(("format",), f"columns are given, so format must be 'columns', got {self.format!r}")
        return self


class DataConfig(Section):
    """Instruction-response data: sources and the train/eval split."""

    sources: list[Source] = []
    """Input files, mixed by weight."""
    eval_fraction: Fraction = 0.1
    """Share of the curated examples held out for evaluation."""
    seed: int = 0
    """Seed for shuffling, sampling and the split."""
