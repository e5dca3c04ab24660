"""The `model` section of adhere.yaml: which base model to tune (step 3)."""

from __future__ import annotations

from typing import Literal

from adhere.config_fields import Section

EMBEDDED_MODEL = "smollm2-135m-instruct"


class ModelConfig(Section):
    """Which base model to start from, and how to load it."""

    base: str = EMBEDDED_MODEL
    """'smollm2-135m-instruct' (embedded, runs anywhere), a local Hugging Face folder, a .gguf file, or a hub id already in the local Hugging Face cache."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `base` is a hub id."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight dtype when loading: 'auto' is bfloat16 on a GPU that supports it, float32 otherwise."""
    chat_template: str | None = None
    """A Jinja chat template, inline or as a path to a file; required when the tokenizer has none."""
    trust_remote_code: bool = False
    """Run Python code shipped with a hub model. Off unless you trust its author."""
    allow_download: bool = False
    """Let a hub id download when it is not in the local cache (never when HF_HUB_OFFLINE=1)."""
