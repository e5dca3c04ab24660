"""Where an OpenAI-compatible endpoint is and how to call it: the settings of `HttpBackend`.

A section for any block of adhere.yaml that points at an endpoint (a model to evaluate, a judge):

    endpoint:
      base_url: http://localhost:8000/v1
      model: my-model
      api_key_env: OPENAI_API_KEY      # the variable's name; the key itself never goes in a file
"""

from __future__ import annotations

from pydantic import field_validator

from adhere.config_fields import NonNegativeFloat, PositiveFloat, PositiveInt, Section, error_at


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
