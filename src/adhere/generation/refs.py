"""A model reference (`ModelRef`: an entry of eval.models, the judge, the synth teacher) and the backend it opens.

    with opened(ref, config, run_dir / "cache", batch_size=config.eval.batch_size) as backend:
        answers = backend.generate(chats, params)

A reference names the project's base or tuned model, a local folder or an endpoint, and the engine
that answers for it (`local`: LocalBackend; `vllm`: a vLLM server adhere starts).

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
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, ValidationInfo, field_validator, model_validator

from adhere.config_fields import Section, error_at, resolve_path
from adhere.errors import UserError
from adhere.generation.config import EndpointConfig, VllmConfig
from adhere.generation.vllm import VllmBackend
from adhere.generation.weights import find_tuned_weights, is_adapter, tuned_weights

if TYPE_CHECKING:
    from adhere.config import ProjectConfig
    from adhere.models.config import ModelConfig

NAMED_MODELS = {"base": "base", "tuned": "tuned", "sft": "sft"}  # shorthand: `models: [base, sft, tuned]`


def _allow_shorthand(schema: dict[str, Any]) -> None:
    """The JSON Schema of a ModelRef also accepts the strings 'base', 'tuned' and 'sft', as the validator does."""
    mapping = dict(schema)
    schema.clear()
    schema.update({"title": "ModelRef", "anyOf": [{"enum": list(NAMED_MODELS)}, mapping]})


class ModelRef(Section):
    """A model to evaluate (or to judge with): the project's base or tuned model, a local folder, or an endpoint."""

    model_config = ConfigDict(json_schema_extra=lambda schema, cls: _allow_shorthand(schema))

    name: str
    """Its name in reports, e.g. 'base', 'tuned', 'gpt-4o'."""
    kind: Literal["base", "tuned", "sft", "folder", "endpoint"]
    """'base': model.base; 'tuned': what `adhere train` wrote (`adhere dpo` with a dpo section); 'sft': what `adhere
    train` wrote, when a dpo section makes 'tuned' the DPO model; 'folder': `path`; 'endpoint': `endpoint`."""
    path: str = ""
    """A Hugging Face model folder (merged, or a base model), for kind 'folder'."""
    endpoint: EndpointConfig | None = None
    """An OpenAI-compatible API (base_url, model, api_key_env, ...), for kind 'endpoint'."""
    engine: Literal["local", "vllm"] = "local"
    """What answers for kinds base, tuned and folder: 'local' (Hugging Face generate inside adhere) or 'vllm' (a
    vLLM server adhere starts and stops; `make vllm` installs it). A LoRA 'tuned' model is served merged, from
    workdir/export/ (written by `adhere export`, or now when it is missing or older than the adapter)."""
    vllm: VllmConfig = VllmConfig()
    """The vLLM server's settings, for engine 'vllm'."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str) and data in NAMED_MODELS:
            return {"name": data, "kind": NAMED_MODELS[data]}
        if isinstance(data, str):
            raise error_at((), f"unknown model {data!r}; use 'base', 'tuned', 'sft', or a mapping with name, kind and path/url")
        return data

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str, info: ValidationInfo) -> str:
        return resolve_path(value, info) if value else value

    @model_validator(mode="after")
    def _needs_location(self) -> ModelRef:
        if self.kind == "folder" and not self.path:
            raise error_at(("path",), "kind 'folder' needs a path to a Hugging Face model folder")
        if self.kind == "endpoint" and self.endpoint is None:
            raise error_at(("endpoint",), "kind 'endpoint' needs endpoint: {base_url: http://localhost:8000/v1, model: ...}")
        if self.kind == "endpoint" and self.engine == "vllm":
            raise error_at(("engine",), "kind 'endpoint' is answered by its own server; engine 'vllm' applies to "
                           "kinds base, tuned, sft and folder (remove engine, or use kind: folder with a path)")
        return self

NEEDED_BY = "eval.models lists 'tuned'"
OTHERWISE = ", or evaluate the base model only: --set eval.models='[base]'"


@contextmanager
def opened(ref: ModelRef, config: ProjectConfig, cache_dir: Path, *, batch_size: int) -> Iterator[Any]:
    """The cached backend for `ref`, a local model answering `batch_size` chats at a time; its memory is freed on exit."""
    from adhere.generation import CachedBackend

    cache_dir.mkdir(parents=True, exist_ok=True)
    inner = _backend(ref, config, cache_dir.parent / "vllm", batch_size)
    backend = CachedBackend(inner, cache_dir / "generations.sqlite")
    try:
        yield backend
    finally:
        if isinstance(inner, VllmBackend):  # stop the server it started, on success, error and Ctrl-C alike
            inner.close()
        del backend, inner
        gc.collect()


def _backend(ref: ModelRef, config: ProjectConfig, vllm_logs: Path, batch: int) -> Any:
    from adhere.generation import HttpBackend, LocalBackend
    from adhere.models.config import ModelConfig

    if ref.engine == "vllm":
        log_path = vllm_logs / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', ref.name)}.log"
        return VllmBackend(_served_model(ref, config), ref.vllm, log_path=log_path)
    if ref.kind == "base":
        return LocalBackend.load(config.model, batch_size=batch)
    if ref.kind == "folder":
        return LocalBackend.load(ModelConfig(base=ref.path), batch_size=batch)
    if ref.kind == "endpoint":
        return HttpBackend(ref.endpoint)
    weights = ref_weights(ref, config)
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
    weights = ref_weights(ref, config)
    if ref.kind == "sft" and is_adapter(weights):  # workdir/export/ holds the tuned (DPO) model merged, not this
        raise UserError(f"eval.models: {ref.name!r} (kind 'sft') is a LoRA adapter, and engine 'vllm' serves adapters "
                        "merged from workdir/export/, which holds the tuned model; use engine 'local' for it")
    return ModelConfig(base=str(merged_export(config) if is_adapter(weights) else weights))


def ref_weights(ref: ModelRef, config: ProjectConfig) -> Path:
    """The trained weights a 'tuned' or 'sft' entry names (weights.py decides where they are)."""
    if ref.kind == "sft":
        return tuned_weights(config, needed_by="eval.models lists 'sft'", otherwise=OTHERWISE, stage="train")
    return tuned_weights(config, needed_by=NEEDED_BY, otherwise=OTHERWISE)


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
    weights = find_tuned_weights(config, "train" if ref.kind == "sft" else None)
    if weights is None:
        return {"source": None, "backend": ref.engine}
    return {"source": str(weights), "base": config.model.base, "backend": ref.engine}
