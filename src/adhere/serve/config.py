"""The `serve` section of adhere.yaml: the deployed API (step 6)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from adhere.config_fields import PositiveFloat, PositiveInt, Section, error_at
from adhere.generation.config import VllmConfig

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ServeConfig(Section):
    """The OpenAI-compatible API."""

    host: str = "127.0.0.1"
    """Address to bind; loopback by default."""
    port: PositiveInt = 8000
    """TCP port."""
    api_key_hashes: list[str] = []  # noqa: RUF012  (pydantic copies a default per instance)
    """SHA-256 hex digests of the accepted API keys (keys themselves never go in this file)."""
    api_keys_env: str = "ADHERE_API_KEYS"
    """Environment variable with comma-separated API keys, added to api_key_hashes."""
    store_prompts: Literal["full", "hash"] = "full"
    """Keep prompts and responses in the monitor database, or only their hashes."""
    max_tokens: PositiveInt = 1024
    """Cap on a request's max_tokens; also what a request without max_tokens may generate."""
    weights: Literal["tuned", "export", "base"] = "tuned"
    """'tuned': what `adhere train` wrote (the adapter on model.base, or the full model); 'export': the merged folder of `adhere export`; 'base': model.base untuned."""
    engine: Literal["local", "vllm"] = "local"
    """What generates: 'local' (the model in adhere's process, batches of serve.batch_size) or 'vllm' (a vLLM
    server adhere starts and stops, behind the same gateway: keys, limits, monitor, checks; `make vllm`
    installs it). With 'vllm' a LoRA 'tuned' model is served merged from workdir/export/, made if missing."""
    vllm: VllmConfig = VllmConfig()
    """The vLLM server's settings, for engine 'vllm' (its --max-num-seqs is serve.batch_size)."""
    model_name: str = ""
    """The model id that /v1/models lists and requests name; empty means the project name."""
    batch_size: PositiveInt = 8
    """Requests generated together: with engine 'local' when their decoding settings agree; with 'vllm' at
    any settings, new ones joining the running batch."""
    max_queue: PositiveInt = 64
    """Requests admitted at once, running or waiting; one more is refused with 429 and Retry-After."""
    max_body_bytes: PositiveInt = 1_048_576
    """Largest request body in bytes (413 above it); 1 MiB holds 32 messages of 32,000 characters."""
    max_messages: PositiveInt = 64
    """Most messages in one request."""
    max_message_chars: PositiveInt = 32_000
    """Most characters in one message (about 8,000 tokens of English)."""
    request_timeout_s: PositiveFloat = 300.0
    """Seconds from arrival to the last token; a request still queued or generating then ends with 504."""
    dashboard_refresh_s: PositiveFloat = 5.0
    """How often the dashboard page reloads its data."""
    session_hours: PositiveFloat = 12.0
    """How long a dashboard sign-in (a session cookie derived from an API key) lasts."""

    @field_validator("port")
    @classmethod
    def _port_range(cls, value: int) -> int:
        if value > 65535:
            raise error_at((), f"expected a TCP port from 1 to 65535, got {value}")
        return value

    @field_validator("api_key_hashes")
    @classmethod
    def _hex_digests(cls, value: list[str]) -> list[str]:
        for i, digest in enumerate(value):
            if not SHA256_HEX.match(digest):
                raise error_at(
                    (i,),
                    "expected a SHA-256 hex digest (64 lowercase hex characters), not a key; make one with "
                    "python -c \"import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())\" KEY",
                )
        return value
