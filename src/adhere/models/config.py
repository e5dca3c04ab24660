"""The `model` section of adhere.yaml: which base model to tune (step 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ValidationInfo, field_validator

from adhere.config_fields import Section, resolve_path

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

    @field_validator("base", "chat_template")
    @classmethod
    def _local_paths_from_config_folder(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A relative path (not a hub id, not inline Jinja) is taken from the config file's folder."""
        if value is None or value == EMBEDDED_MODEL or "{%" in value or "{{" in value:
            return value
        base = Path((info.context or {}).get("base_dir", "."))
        if value.startswith((".", "~", "/")) or value.endswith((".gguf", ".jinja")) or (base / value).exists():
            return resolve_path(value, info)
        return value

    def template_file(self) -> Path | None:
        """The file `chat_template` names, or None when it is unset or inline Jinja (it contains '{%' or '{{')."""
        template = self.chat_template
        if template is None or "{%" in template or "{{" in template:
            return None
        return Path(template).expanduser()
