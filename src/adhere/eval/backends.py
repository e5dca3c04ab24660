"""From an `eval.models` entry to a generation backend: the project's base or tuned model, a folder, an endpoint.

    with opened(ref, config, run_dir / "cache") as backend:
        answers = backend.generate(chats, params)

Every backend is wrapped in the on-disk cache, keyed by the backend's identity
(its weights or its endpoint and model), the chat and the decoding settings, so
re-running `adhere eval` re-scores without regenerating. Local models are
loaded one at a time and released after use, so evaluating two 7B models needs
the memory of one.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adhere.errors import UserError

if TYPE_CHECKING:
    from adhere.config import ProjectConfig
    from adhere.eval.config import ModelRef


@contextmanager
def opened(ref: ModelRef, config: ProjectConfig, cache_dir: Path) -> Iterator[Any]:
    """The cached backend for `ref`; a local model's memory is freed on exit."""
    from adhere.generation import CachedBackend

    cache_dir.mkdir(parents=True, exist_ok=True)
    backend = CachedBackend(_backend(ref, config), cache_dir / "generations.sqlite")
    try:
        yield backend
    finally:
        del backend
        gc.collect()


def _backend(ref: ModelRef, config: ProjectConfig) -> Any:
    from adhere.generation import HttpBackend, LocalBackend
    from adhere.models.config import ModelConfig

    batch = config.eval.batch_size
    if ref.kind == "base":
        return LocalBackend.load(config.model, batch_size=batch)
    if ref.kind == "folder":
        return LocalBackend.load(ModelConfig(base=ref.path), batch_size=batch)
    if ref.kind == "endpoint":
        return HttpBackend(ref.endpoint)
    weights = tuned_weights(config)
    if weights.name == "adapter":
        return LocalBackend.load(config.model, adapter=weights, batch_size=batch)
    return LocalBackend.load(ModelConfig(base=str(weights)), batch_size=batch)


def tuned_weights(config: ProjectConfig) -> Path:
    """The folder `adhere train` wrote: `adapter/` (LoRA) or `model/` (full fine-tuning)."""
    train_dir = config.stage_dir("train")
    for name in ("adapter", "model") if config.train.method == "lora" else ("model", "adapter"):
        if (train_dir / name).is_dir():
            return train_dir / name
    raise UserError(
        f"eval.models lists 'tuned' but {train_dir} holds no trained weights (adapter/ or model/); "
        f"run `adhere train {config.name}` first, or evaluate the base model only: --set eval.models='[base]'"
    )


def describe(ref: ModelRef, config: ProjectConfig) -> dict[str, Any]:
    """What a model entry points at, for results.json."""
    if ref.kind == "base":
        return {"source": config.model.base, "backend": "local"}
    if ref.kind == "folder":
        return {"source": ref.path, "backend": "local"}
    if ref.kind == "endpoint":
        return {"source": f"{ref.endpoint.base_url} model={ref.endpoint.model}", "backend": "endpoint"}
    try:
        return {"source": str(tuned_weights(config)), "base": config.model.base, "backend": "local"}
    except UserError:
        return {"source": None, "backend": "local"}
