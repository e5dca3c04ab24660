"""The `data` section of adhere.yaml: where the instruction data comes from and how it is curated (step 2)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import SerializerFunctionWrapHandler, ValidationInfo, field_validator, model_serializer, model_validator

from adhere.config_fields import Fraction, PositiveInt, Section, error_at, resolve_path

Format = Literal["auto", "alpaca", "messages", "sharegpt", "prompt_completion", "trl", "pair", "columns"]
COLUMN_FIELDS = ("instruction", "input", "output", "system")
# Formats of preference pairs (data.pairs): TRL's prompt/chosen/rejected, and the pair record adhere writes.
PAIR_FORMATS = ("trl", "pair")
PAIR_COLUMN_FIELDS = ("prompt", "chosen", "rejected", "system")


class Source(Section):
    """One input file or saved dataset folder."""

    path: str
    """A .jsonl, .json, .csv, .tsv or .parquet file, or a saved Hugging Face dataset folder (relative to adhere.yaml)."""
    format: Format = "auto"
    """Row format; 'auto' detects it from the first row's fields."""
    columns: dict[str, str] = {}
    """For format 'columns': which source column holds each field, e.g. {instruction: question, output: answer};
    in data.pairs {prompt: question, chosen: good, rejected: bad} (system optional in both)."""
    max_rows: PositiveInt | None = None
    """Keep at most this many of the source's valid rows (a seeded sample); the rest are listed as not sampled."""

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str, info: ValidationInfo) -> str:
        return resolve_path(value, info)

    @model_validator(mode="after")
    def _columns_need_format(self) -> Source:
        if self.columns and self.format == "auto":
            self.format = "columns"
        if self.format == "columns":
            fields, needed = (PAIR_COLUMN_FIELDS, {"prompt", "chosen", "rejected"}) if self.pair_format else (
                COLUMN_FIELDS, {"instruction", "output"})
            if not needed <= set(self.columns):
                raise error_at(("columns",), "format 'columns' needs at least {instruction: COLUMN, output: COLUMN} "
                               "(for data.pairs {prompt: COLUMN, chosen: COLUMN, rejected: COLUMN})")
            unknown = set(self.columns) - set(fields)
            if unknown:
                raise error_at(("columns",), f"unknown fields {sorted(unknown)}; map any of {', '.join(fields)}")
        elif self.columns:
            raise error_at(("format",), f"columns are given, so format must be 'columns', got {self.format!r}")
        return self

    @property
    def pair_format(self) -> bool:
        """Whether the format reads preference pairs (trl, pair, or columns mapping chosen/rejected)."""
        return self.format in PAIR_FORMATS or bool({"chosen", "rejected"} & set(self.columns))


class DedupConfig(Section):
    """Exact and near-duplicate removal."""

    exact: bool = True
    """Drop records whose normalised prompt and response equal an earlier record's."""
    near: bool = True
    """Drop near-duplicates found with MinHash LSH over word shingles."""
    near_threshold: Fraction = 0.8
    """Jaccard similarity of word 5-gram sets at or above which two records are near-duplicates."""
    shingle: PositiveInt = 5
    """Words per shingle."""
    num_perm: PositiveInt = 128
    """MinHash permutations: more is more accurate and slower."""
    semantic: bool = False
    """Also drop paraphrases by sentence-embedding cosine (all-MiniLM-L6-v2; about 1,000 rows/s on 2 cores)."""
    semantic_threshold: Fraction = 0.95
    """Cosine similarity at or above which two records are semantic duplicates."""


class QualityConfig(Section):
    """Cheap heuristics that catch rows not worth training on."""

    enabled: bool = True
    min_response_words: PositiveInt = 1
    """Responses with fewer words are dropped."""
    max_response_words: PositiveInt = 4000
    """Responses with more words are dropped."""
    max_repeated_ngrams: Fraction = 0.5
    """Drop responses (of 30+ words) where this share of word 3-grams repeats an earlier one."""
    refusals: bool = True
    """Drop refusal and boilerplate responses ("As an AI language model...")."""
    copy_threshold: Fraction = 0.9
    """Drop responses whose word set overlaps the prompt's at least this much (Jaccard): echoes, not answers."""


class DecontamConfig(Section):
    """Evaluation prompts must not leak into training."""

    enabled: bool = True
    ngram: PositiveInt = 13
    """Words per n-gram; 13 as lm-evaluation-harness, 8 in some recent recipes."""
    targets: list[str] = []
    """More benchmark files (JSONL with a 'prompt' field, or canonical records) checked besides the eval split and
    the benchmarks of eval.suites (IFEval's prompts, eval.custom_file), which are always checked."""

    @field_validator("targets")
    @classmethod
    def _absolute(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return [resolve_path(v, info) for v in value]


class DataConfig(Section):
    """Instruction-response data: sources, validation, curation and the train/validation/eval split."""

    sources: list[Source] = []
    """Input files; their rows are validated, curated and pooled."""
    pairs: list[Source] = []
    """Preference-pair files (format auto, trl, pair or columns); validated, deduplicated and decontaminated
    into pairs.jsonl and pairs_valid.jsonl for preference tuning."""
    eval_file: str | None = None
    """A held-out file used as the eval set as it is (no split); training rows are decontaminated against it."""
    eval_fraction: Fraction = 0.1
    """Share of the curated examples held out for evaluation (when there is no eval_file)."""
    validation_fraction: Fraction | None = None
    """Share of the training rows held out as valid.jsonl for early stopping and best-weight selection; unset: 0.05 with train.eval_every (at least 1 row, given 2+), else 0."""
    stratify_by: str | None = None
    """A meta field (e.g. 'type') whose values are split in equal proportion."""
    seed: int = 0
    """Seed for sampling and the split."""
    max_chars: PositiveInt = 100_000
    """Rows whose text is longer are rejected before anything else looks at them."""
    token_checks: bool = True
    """Render every example with the model's chat template; reject those over train.max_length tokens or with none to train."""
    check_spec: bool = True
    """Reject reference responses that fail the spec's constraints (e.g. JSON that breaks the schema)."""
    pii: Literal["flag", "redact", "drop"] = "flag"
    """Rows with e-mails, phone numbers, card numbers, secrets...: list them in the card, redact them, or drop them."""
    dedup: DedupConfig = DedupConfig()
    quality: QualityConfig = QualityConfig()
    decontam: DecontamConfig = DecontamConfig()

    @field_validator("eval_file")
    @classmethod
    def _absolute(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else resolve_path(value, info)

    @model_validator(mode="after")
    def _formats_fit_their_list(self) -> DataConfig:
        for i, source in enumerate(self.sources):
            if source.pair_format:
                key = "format" if source.format in PAIR_FORMATS else "columns"
                raise error_at(("sources", i, key), f"{source.format!r} reads preference pairs (chosen/rejected); "
                               "list this file under data.pairs, or give a row format (alpaca, messages, ...)")
        for i, source in enumerate(self.pairs):
            if not source.pair_format and source.format != "auto":
                key = "columns" if source.columns else "format"
                raise error_at(("pairs", i, key), f"{source.format!r} reads instruction rows, not pairs; list this "
                               f"file under data.sources, or give a pair format ({', '.join(PAIR_FORMATS)}, columns "
                               "with prompt/chosen/rejected, or auto)")
        return self

    @model_serializer(mode="wrap")
    def _omit_empty_pairs(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Without pairs the section dumps as it did before data.pairs existed, so the data stage's
        # fingerprint and resolved config of existing projects stay byte-identical (no needless rerun).
        out = handler(self)
        if not self.pairs:
            out.pop("pairs", None)
        return out
