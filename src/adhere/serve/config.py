"""The `serve` section of adhere.yaml: the deployed API (step 6)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from adhere.config_fields import PositiveInt, Section, error_at

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ServeConfig(Section):
    """The OpenAI-compatible API."""

    host: str = "127.0.0.1"
    """Address to bind; loopback by default."""
    port: PositiveInt = 8000
    """TCP port."""
    api_key_hashes: list[str] = []
    """SHA-256 hex digests of the accepted API keys (keys themselves never go in this file)."""
    api_keys_env: str = "ADHERE_API_KEYS"
    """Environment variable with comma-separated API keys, added to api_key_hashes."""
    store_prompts: Literal["full", "hash"] = "full"
    """Keep prompts and responses in the monitor database, or only their hashes."""
    max_tokens: PositiveInt = 1024
    """Cap on a request's max_tokens."""

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
