"""From a model entry (`eval.models`, the judge, the synth teacher) to a backend: base, tuned, a folder, an endpoint.

    with opened(ref, config, run_dir / "cache") as backend:
        answers = backend.generate(chats, params)

Every backend is wrapped in the on-disk cache, keyed by the backend's identity
(its weights or its endpoint and model), the chat and the decoding settings, so
re-running `adhere eval` re-scores without regenerating. Local models are
loaded one at a time and released after use, so evaluating two 7B models needs
the memory of one. With `engine: vllm` the entry's vLLM server runs while it is
open and is stopped on exit; its output goes to `vllm/<name>.log` beside the cache.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adhere.generation.vllm import VllmBackend
from adhere.generation.weights import find_tuned_weights, is_adapter, tuned_weights

if TYPE_CHECKING:
    from adhere.config import ProjectConfig
    from adhere.eval.config import ModelRef
    from adhere.models.config import ModelConfig

NEEDED_BY = "eval.models lists 'tuned'"
OTHERWISE = ", or evaluate the base model only: --set eval.models='[base]'"


@contextmanager
def opened(ref: ModelRef, config: ProjectConfig, cache_dir: Path) -> Iterator[Any]:
    """The cached backend for `ref`; a local model's memory is freed on exit."""
    from adhere.generation import CachedBackend

    cache_dir.mkdir(parents=True, exist_ok=True)
    inner = _backend(ref, config, cache_dir.parent / "vllm")
    backend = CachedBackend(inner, cache_dir / "generations.sqlite")
    try:
        yield backend
    finally:
        if isinstance(inner, VllmBackend):  # stop the server it started, on success, error and Ctrl-C alike
            inner.close()
        del backend, inner
        gc.collect()


def _backend(ref: ModelRef, config: ProjectConfig, vllm_logs: Path) -> Any:
    from adhere.generation import HttpBackend, LocalBackend
    from adhere.models.config import ModelConfig

    if ref.engine == "vllm":
        log_path = vllm_logs / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', ref.name)}.log"
        return VllmBackend(_served_model(ref, config), ref.vllm, log_path=log_path)
    batch = config.eval.batch_size
    if ref.kind == "base":
        return LocalBackend.load(config.model, batch_size=batch)
    if ref.kind == "folder":
        return LocalBackend.load(ModelConfig(base=ref.path), batch_size=batch)
    if ref.kind == "endpoint":
        return HttpBackend(ref.endpoint)
    weights = tuned_weights(config, needed_by=NEEDED_BY, otherwise=OTHERWISE)
    if is_adapter(weights):
        return LocalBackend.load(config.model, adapter=weights, batch_size=batch)
    return LocalBackend.load(ModelConfig(base=str(weights)), batch_size=batch)


def _served_model(ref: ModelRef, config: ProjectConfig) -> ModelConfig:
    """The model a vLLM server loads for `ref`: LoRA weights merged, since vLLM's LoRA on CPU is slow.

    Measured on 2 CPU cores (issue 15): the code-review adapter through vLLM's LoRA support gave 12
    tokens/s and a first answer after almost 5 minutes; merged weights run at the base model's speed.
    """
    from adhere.models.config import ModelConfig

    if ref.kind == "base":
        return config.model
    if ref.kind == "folder":
        return ModelConfig(base=ref.path)
    weights = tuned_weights(config, needed_by=NEEDED_BY, otherwise=OTHERWISE)
    return ModelConfig(base=str(merged_export(config) if is_adapter(weights) else weights))


def merged_export(config: ProjectConfig) -> Path:
    """workdir/export/, the merged model `adhere export` writes; exported now if missing or older than the adapter."""
    from adhere.train import export

    adapter, out = tuned_weights(config, needed_by=NEEDED_BY, otherwise=OTHERWISE), config.stage_dir("export")
    newest = max((f.stat().st_mtime for f in adapter.iterdir() if f.is_file()), default=0.0)
    merged = out / "model.safetensors"
    if not merged.is_file() or merged.stat().st_mtime < newest:
        export.run(config, out)
    return out


def describe(ref: ModelRef, config: ProjectConfig) -> dict[str, Any]:
    """What a model entry points at, for results.json."""
    if ref.kind == "base":
        return {"source": config.model.base, "backend": ref.engine}
    if ref.kind == "folder":
        return {"source": ref.path, "backend": ref.engine}
    if ref.kind == "endpoint":
        return {"source": f"{ref.endpoint.base_url} model={ref.endpoint.model}", "backend": "endpoint"}
    weights = find_tuned_weights(config)
    if weights is None:
        return {"source": None, "backend": ref.engine}
    return {"source": str(weights), "base": config.model.base, "backend": ref.engine}
