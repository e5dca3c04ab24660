"""Step 3, choose a base model: resolve `model.base` and load model + tokenizer.

    from adhere.models import load_model
    loaded = load_model(config.model)

`model.base` is one of: the embedded default `smollm2-135m-instruct`; a local
Hugging Face folder; a `.gguf` file; or a hub id, loaded from the local Hugging
Face cache only (unless `model.allow_download`), so nothing ever waits on a
network that is not there. Weights load from safetensors only (no pickle), and
`trust_remote_code` stays off unless the config turns it on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adhere.errors import UserError
from adhere.models.config import EMBEDDED_MODEL, ModelConfig

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")

Kind = Literal["embedded", "folder", "gguf", "hub"]


@dataclass
class ResolvedModel:
    """Where a model reference points, found without loading any weights."""

    kind: Kind
    reference: str
    path: Path | None  # the folder or .gguf file; None for a hub id


@dataclass
class LoadedModel:
    """A causal LM ready for generation or training, with its tokenizer."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    resolved: ResolvedModel
    source: str  # the folder, file or hub id the weights came from


def resolve(cfg: ModelConfig) -> ResolvedModel:
    """Classify `cfg.base` as embedded, folder, .gguf file or hub id; raise UserError if it is none."""
    base = cfg.base
    if base == EMBEDDED_MODEL:
        from adhere.models.embedded import embedded_status

        return ResolvedModel("embedded", base, embedded_status().folder)
    path = Path(base).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"model.base: GGUF file {base!r} not found")
        return ResolvedModel("gguf", base, path)
    if path.is_dir():
        return ResolvedModel("folder", base, path)
    looks_like_path = base.startswith(("/", ".", "~")) or base.count("/") > 1
    if looks_like_path or not HUB_ID.match(base):
        raise UserError(
            f"model.base: {base!r} is not a folder, a .gguf file or a hub id (org/name); "
            f"use {EMBEDDED_MODEL!r}, a local Hugging Face folder, a .gguf file, or a hub id in your local cache"
        )
    return ResolvedModel("hub", base, None)


def load_model(cfg: ModelConfig, *, device: str | None = None) -> LoadedModel:
    """Load the configured base model and tokenizer, in eval mode on `device` (default: GPU if any)."""
    import torch

    from adhere import hardware

    resolved = resolve(cfg)
    device = device or hardware.default_device()
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(cfg.dtype)
    if dtype is None:  # auto: bf16 halves memory on GPUs with native support; fp32 keeps CPU inference exact
        dtype = torch.bfloat16 if device.startswith("cuda") and hardware.bf16_available(device) else torch.float32
    source, kwargs = _source(cfg, resolved)
    tokenizer = load_tokenizer(cfg, resolved=resolved)
    model = _from_pretrained(cfg, source, kwargs, dtype)
    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, resolved=resolved, source=source)


def load_tokenizer(cfg: ModelConfig, *, resolved: ResolvedModel | None = None) -> Any:
    """The configured model's tokenizer with its chat template (from `model.chat_template` if set) and a pad token."""
    resolved = resolved or resolve(cfg)
    source, kwargs = _source(cfg, resolved)
    tokenizer = _from_pretrained(cfg, source, kwargs, None)
    _ensure_chat_template(tokenizer, cfg)
    if tokenizer.pad_token is None:
        # Batched generation pads on the left; the pad token's id never reaches the
        # loss (labels use IGNORE_INDEX), so reusing end-of-sequence is safe.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _source(cfg: ModelConfig, resolved: ResolvedModel) -> tuple[str, dict[str, Any]]:
    """The path or id to pass to from_pretrained, and the extra arguments its kind needs."""
    if resolved.kind == "embedded":
        from adhere.models.embedded import ensure_embedded_model

        return str(ensure_embedded_model()), {}
    assert resolved.kind == "hub" or resolved.path is not None
    if resolved.kind == "gguf":
        return str(resolved.path.parent), {"gguf_file": resolved.path.name}  # type: ignore[union-attr]
    if resolved.kind == "folder":
        _require_safetensors(resolved.path)  # type: ignore[arg-type]
        return str(resolved.path), {}
    return cfg.base, {"revision": cfg.revision, "local_files_only": _hub_offline(cfg)}


def _from_pretrained(cfg: ModelConfig, source: str, kwargs: dict[str, Any], dtype: Any) -> Any:
    """The model (or, with dtype None, the tokenizer), with errors a user can act on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    common = {"trust_remote_code": cfg.trust_remote_code, **kwargs}
    # A per-tensor "Loading weights" bar for a load of a few seconds is noise in every command's output.
    hf_logging.disable_progress_bar()
    try:
        if dtype is None:
            return AutoTokenizer.from_pretrained(source, **common)
        safetensors_only = None if "gguf_file" in kwargs else True  # a .gguf is its own format
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype, use_safetensors=safetensors_only, **common)
    except OSError as exc:
        if common.get("local_files_only"):
            raise UserError(_not_cached_message(cfg)) from None
        raise UserError(f"model.base {cfg.base!r}: cannot load it: {exc}") from None
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise UserError(
                f"model.base {cfg.base!r} needs code shipped with the model; "
                "set model.trust_remote_code: true only if you trust its author"
            ) from None
        raise
    finally:
        hf_logging.enable_progress_bar()


def _hub_offline(cfg: ModelConfig) -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or not cfg.allow_download


def _not_cached_message(cfg: ModelConfig) -> str:
    from huggingface_hub import constants

    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "model.allow_download is false"
    return (
        f"model.base {cfg.base!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}. "
        f"Download it where there is network (`hf download {cfg.base}`) and copy the cache here, "
        f"point model.base at a local folder, or use the embedded {EMBEDDED_MODEL!r}."
    )


def _require_safetensors(folder: Path) -> None:
    if any(folder.glob("*.safetensors")):
        return
    pickled = [p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern)]
    if pickled:
        raise UserError(
            f"model.base {str(folder)!r} has only pickle weights ({', '.join(sorted(pickled))}); adhere loads "
            "safetensors only, because unpickling runs arbitrary code. Convert them once in a trusted "
            "environment: AutoModelForCausalLM.from_pretrained(folder).save_pretrained(folder)"
        )
    raise UserError(f"model.base {str(folder)!r} has no model weights (*.safetensors)")


def _ensure_chat_template(tokenizer: Any, cfg: ModelConfig) -> None:
    """Use `model.chat_template` (inline Jinja or a file) if given; require a template either way."""
    template = cfg.chat_template
    if template is not None and "{%" not in template and "{{" not in template:
        path = Path(template).expanduser()
        if not path.is_file():
            raise UserError(f"model.chat_template: {template!r} is neither Jinja (no '{{%' or '{{{{') nor an existing file")
        template = path.read_text(encoding="utf-8")
    if template is not None:
        tokenizer.chat_template = template
    if not tokenizer.chat_template:
        raise UserError(
            f"model.base {cfg.base!r}: the tokenizer has no chat template, so adhere cannot render conversations "
            "the same way in training, evaluation and serving. Set model.chat_template to a Jinja template "
            "(inline, or a path to a .jinja file), e.g. the template of the model family it was trained with."
        )
