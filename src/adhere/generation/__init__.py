"""Model answers to chats, from a local Hugging Face model or any OpenAI-compatible endpoint.

    from adhere.generation import CachedBackend, GenerationParams, HttpBackend, LocalBackend
    backend = CachedBackend(LocalBackend(config.model, adapter="workdir/train/adapter"), "workdir/eval/cache.sqlite")
    answers = backend.generate([[{"role": "user", "content": "Say hi."}]], GenerationParams(max_new_tokens=64))

Shared by evaluation (step 5), the LLM judge, the server (step 6) and synthetic data: each
asks a `Backend` for the answers to a list of chats and gets one `Generation` per chat, in
input order. torch and transformers are imported only when a `LocalBackend` loads its model.
"""

from adhere.generation.backend import Backend, FinishReason, Generation, GenerationParams, Progress, check_chats
from adhere.generation.cache import CachedBackend
from adhere.generation.config import EndpointConfig
from adhere.generation.http import HttpBackend
from adhere.generation.local import LocalBackend

__all__ = [
    "Backend", "CachedBackend", "EndpointConfig", "FinishReason", "Generation", "GenerationParams", "HttpBackend",
    "LocalBackend", "Progress", "check_chats",
]
