"""Model answers to chats, from a local Hugging Face model, a vLLM server adhere runs, or any OpenAI-compatible endpoint.

    from adhere.generation import CachedBackend, GenerationParams, HttpBackend, LocalBackend
    backend = CachedBackend(LocalBackend(config.model, adapter="workdir/train/adapter"), "workdir/eval/cache.sqlite")
    answers = backend.generate([[{"role": "user", "content": "Say hi."}]], GenerationParams(max_new_tokens=64))

Shared by evaluation (step 5), the LLM judge, the server (step 6) and synthetic data: each
asks a `Backend` for the answers to a list of chats and gets one `Generation` per chat, in
input order. torch and transformers are imported only when a `LocalBackend` loads its model;
`VllmBackend` runs vLLM in its own environment (`make vllm`) and talks to it over HTTP.
"""

from adhere.generation.backend import Backend, FinishReason, Generation, GenerationParams, Progress, check_chats
from adhere.generation.cache import CachedBackend
from adhere.generation.config import EndpointConfig, VllmConfig
from adhere.generation.http import HttpBackend
from adhere.generation.local import LocalBackend
from adhere.generation.vllm import VllmBackend

__all__ = [
    "Backend", "CachedBackend", "EndpointConfig", "FinishReason", "Generation", "GenerationParams", "HttpBackend",
    "LocalBackend", "Progress", "VllmBackend", "VllmConfig", "check_chats",
]
