"""Step 3, choose a base model: resolve `model.base` and load model + tokenizer.

    from adhere.models import load_model
    loaded = load_model(config.model)                      # eval mode, for generation
    loaded = load_model(config.model, for_training=True)   # train mode, for the training loop

`model.base` is one of: the embedded default `smollm2-135m-instruct`; a local
Hugging Face folder; a `.gguf` file; or a hub id, loaded from the local Hugging
Face cache only (unless `model.allow_download`), so nothing ever waits on a
network that is not there. Weights load from safetensors only (no pickle), and
`trust_remote_code` stays off unless the config turns it on. torch and
transformers are imported only when a model is loaded: `resolve()` is cheap.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
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
    reference: str  # model.base as configured
    path: Path | None  # the folder or .gguf file; the snapshot folder of a cached hub id; None if not cached
    ready: bool  # loads without a download or a conversion (the embedded model converts on first use)


@dataclass
class LoadedModel:
    """A causal LM ready for generation or training, with its tokenizer."""

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase, with a chat template and a pad token
    resolved: ResolvedModel
    source: str  # the folder, .gguf file or hub id the weights were read from


def resolve(cfg: ModelConfig) -> ResolvedModel:
    """Classify `cfg.base` as embedded, folder, .gguf file or hub id; raise UserError if it is none."""
    base = cfg.base
    if base == EMBEDDED_MODEL:
        from adhere.models.embedded import embedded_status

        status = embedded_status()
        return ResolvedModel("embedded", base, status.folder, status.converted)
    path = Path(base).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"model.base: GGUF file {base!r} not found; give the path of an existing .gguf file")
        return ResolvedModel("gguf", base, path, True)
    if path.is_dir():
        return ResolvedModel("folder", base, path, True)
    looks_like_path = base.startswith(("/", ".", "~")) or base.count("/") > 1
    if looks_like_path or not HUB_ID.match(base):
        raise UserError(
            f"model.base: {base!r} is not a folder, a .gguf file or a hub id (org/name); "
            f"use {EMBEDDED_MODEL!r}, a local Hugging Face folder, a .gguf file, or a hub id in your local cache"
        )
    snapshot = _cached_snapshot(base, cfg.revision)
    return ResolvedModel("hub", base, snapshot, snapshot is not None)


def load_model(cfg: ModelConfig, *, device: str | None = None, for_training: bool = False) -> LoadedModel:
    """Load the configured base model and tokenizer onto `device` (default: the GPU if there is one).

    For generation (default) the model is in eval mode and the tokenizer pads on the left, so a batch of
    prompts ends where generation starts. With `for_training` the model is in train mode without a KV
    cache, and the tokenizer pads on the right.
    """
    resolved = resolve(cfg)
    source, revision = _source(cfg, resolved)  # before importing torch: a missing model fails in milliseconds
    import torch

    from adhere import hardware

    device = device or hardware.default_device()
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(cfg.dtype)
    if dtype is None:  # auto: bf16 halves memory on GPUs with native support; fp32 keeps CPU math exact
        dtype = torch.bfloat16 if device.startswith("cuda") and hardware.bf16_available(device) else torch.float32

    if resolved.kind == "gguf":
        from adhere.models.gguf_model import load_gguf

        with _gguf_errors(cfg):
            model, tokenizer = load_gguf(Path(source), dtype)
    else:
        tokenizer = _pretrained_tokenizer(cfg, source, revision)
        model = _pretrained_model(cfg, source, revision, dtype)
    _prepare_tokenizer(tokenizer, cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id  # generate() fills finished rows with it
    tokenizer.padding_side = "right" if for_training else "left"
    model.to(device)
    if for_training:
        model.config.use_cache = False  # the KV cache only speeds up generation; in training it costs memory
        model.train()
    else:
        model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, resolved=resolved, source=source)


def load_tokenizer(cfg: ModelConfig, *, resolved: ResolvedModel | None = None) -> Any:
    """The configured model's tokenizer with its chat template (from `model.chat_template` if set) and a pad token."""
    resolved = resolved or resolve(cfg)
    source, revision = _source(cfg, resolved)
    if resolved.kind == "gguf":
        from adhere.models.gguf_model import load_gguf_tokenizer

        with _gguf_errors(cfg):
            tokenizer = load_gguf_tokenizer(Path(source))
    else:
        tokenizer = _pretrained_tokenizer(cfg, source, revision)
    _prepare_tokenizer(tokenizer, cfg)
    return tokenizer


def _source(cfg: ModelConfig, resolved: ResolvedModel) -> tuple[str, str | None]:
    """The folder, file or hub id to read, and the revision to download (only for a hub id not cached)."""
    if resolved.kind == "embedded":
        from adhere.models.embedded import ensure_embedded_model

        return str(ensure_embedded_model()), None
    if resolved.kind == "gguf":
        return str(resolved.path), None
    if resolved.path is not None:  # a folder, or the snapshot folder of a cached hub id
        _require_safetensors(resolved.path, cfg.base)
        return str(resolved.path), None
    if _offline(cfg):
        raise UserError(_not_cached_message(cfg))
    _probe_hub(cfg)
    return cfg.base, cfg.revision  # a hub id not in the cache, and model.allow_download lets it download


def _pretrained_tokenizer(cfg: ModelConfig, source: str, revision: str | None) -> Any:
    from transformers import AutoTokenizer

    with _user_errors(cfg, source):
        return AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=cfg.trust_remote_code)


def _pretrained_model(cfg: ModelConfig, source: str, revision: str | None, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    # A per-tensor "Loading weights" bar for a load of a second or two is noise in every command's output.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with _user_errors(cfg, source):
            return AutoModelForCausalLM.from_pretrained(
                source, revision=revision, dtype=dtype, use_safetensors=True, trust_remote_code=cfg.trust_remote_code
            )
    finally:
        if bars:
            hf_logging.enable_progress_bar()


@contextmanager
def _user_errors(cfg: ModelConfig, source: str) -> Iterator[None]:
    """transformers' errors for a model folder a user can fix, as UserError."""
    try:
        yield
    except OSError as exc:  # missing files, a download that failed
        raise UserError(f"model.base {cfg.base!r}: cannot load it from {source}: {exc}") from None
    except ValueError as exc:
        # With trust_remote_code=False, transformers 5 ignores the config's `auto_map` (the model's own
        # code) and fails on the unknown model type instead of saying that code was needed.
        if not cfg.trust_remote_code and ("trust_remote_code" in str(exc) or _ships_code(source)):
            raise UserError(
                f"model.base {cfg.base!r} needs Python code shipped with the model (auto_map in its config.json); "
                "set model.trust_remote_code: true only if you trust its author"
            ) from None
        if "instantiate the backend tokenizer" in str(exc):
            raise UserError(
                f"model.base {cfg.base!r}: no usable tokenizer in {source} (expected tokenizer.json); "
                "copy the tokenizer files of the model it was trained from into that folder"
            ) from None
        if "does not recognize this architecture" in str(exc):
            raise UserError(f"model.base {cfg.base!r}: {str(exc).splitlines()[0]}") from None
        raise


@contextmanager
def _gguf_errors(cfg: ModelConfig) -> Iterator[None]:
    """A file that is not GGUF, or an architecture transformers cannot read from GGUF, as UserError."""
    try:
        yield
    except (ValueError, NotImplementedError, OSError) as exc:
        raise UserError(
            f"model.base {cfg.base!r}: cannot read this .gguf file: {str(exc).splitlines()[0].rstrip('.')}; "
            "use a Hugging Face folder of the model instead"
        ) from None


def _ships_code(folder: str) -> bool:
    try:
        return "auto_map" in json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The local snapshot folder of a hub id, if its config.json is in the Hugging Face cache; no network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return Path(found).parent if isinstance(found, str) else None


def _probe_hub(cfg: ModelConfig) -> None:
    """Ask the hub about the model once, with a short timeout, before downloading it.

    Without a network, a download fails only after huggingface_hub's 5 retries with backoff
    (46 s measured with DNS failing); this one request fails in milliseconds, and also tells
    a missing or private model apart from a missing network.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(cfg.base, revision=cfg.revision, timeout=10)
    except RevisionNotFoundError:
        raise UserError(f"model.revision {cfg.revision!r} does not exist for hub model {cfg.base!r}") from None
    except RepositoryNotFoundError:
        raise UserError(
            f"model.base {cfg.base!r}: no such model on the hub, or it is private or gated "
            "(then log in with `hf auth login` and accept its terms on its page)"
        ) from None
    except Exception as exc:  # no network, a proxy, a timeout: whatever the HTTP stack raises
        raise UserError(
            f"model.base {cfg.base!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            f"the hub ({constants.ENDPOINT}) cannot be reached to download it: {exc}. Download it where there is "
            f"network (`hf download {cfg.base}`) and copy the cache here, or point model.base at a local folder."
        ) from None


def _offline(cfg: ModelConfig) -> bool:
    """True unless downloads are allowed by the config and not forbidden by HF_HUB_OFFLINE."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    return not cfg.allow_download or constants.HF_HUB_OFFLINE or env


def _not_cached_message(cfg: ModelConfig) -> str:
    from huggingface_hub import constants

    why = "model.allow_download is false" if not cfg.allow_download else "HF_HUB_OFFLINE is set"
    revision = f" (revision {cfg.revision!r})" if cfg.revision else ""
    return (
        f"model.base {cfg.base!r}{revision} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
        f"and {why}. Download it where there is network (`hf download {cfg.base}`) and copy the cache here, "
        f"point model.base at a local folder, set model.allow_download: true, or use the embedded {EMBEDDED_MODEL!r}."
    )


def _require_safetensors(folder: Path, reference: str) -> None:
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    if pickled:
        raise UserError(
            f"model.base {reference!r}: {folder} has only pickle weights ({', '.join(pickled)}); adhere loads "
            "safetensors only, because unpickling a file can run arbitrary code. Convert them once, in an "
            "environment you trust: AutoModelForCausalLM.from_pretrained(folder).save_pretrained(folder)"
        )
    raise UserError(f"model.base {reference!r}: {folder} has no model weights (*.safetensors)")


def _prepare_tokenizer(tokenizer: Any, cfg: ModelConfig) -> None:
    """Use `model.chat_template` (inline Jinja or a file) if given, require a template, ensure a pad token.

    Without a pad token batching fails. End-of-sequence is the usual stand-in: padded positions are
    excluded by the attention mask, and in training by the loss mask (labels are IGNORE_INDEX there,
    decided by position, never by comparing ids with the pad id), so the model still learns to emit
    the real end-of-sequence tokens.
    """
    template = cfg.chat_template
    path = cfg.template_file()
    if path is not None:
        if not path.is_file():
            raise UserError(
                f"model.chat_template: file {template!r} not found; give the path of a Jinja template file, "
                "or the template itself inline (it contains '{%' or '{{')"
            )
        template = path.read_text(encoding="utf-8")
    if template is not None:
        tokenizer.chat_template = template
    if not tokenizer.chat_template:
        raise UserError(
            f"model.base {cfg.base!r}: the tokenizer has no chat template, so adhere cannot render conversations "
            "the same way in training, evaluation and serving. Set model.chat_template to a Jinja template "
            "(inline, or a path to a .jinja file), e.g. the template of the model family it was trained with."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
