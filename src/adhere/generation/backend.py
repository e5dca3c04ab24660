"""The types every generation backend shares: params in, one Generation per chat out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from adhere.errors import UserError

FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class GenerationParams:
    """How to generate: the same params on the same backend and chat give the same answer (the cache relies on it)."""

    max_new_tokens: int = 512
    temperature: float = 0.0  # 0 is greedy; above 0 samples, reproducibly for a seed
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens: expected a positive integer, got {self.max_new_tokens!r}")
        if not 0 <= self.temperature <= 100:  # also rejects NaN
            raise UserError(f"temperature: expected a number from 0 (greedy) to 100, got {self.temperature!r}")
        if not 0 <= self.top_p <= 1:  # 0 keeps only the most likely token (see sampling.py)
            raise UserError(f"top_p: expected a number from 0 to 1, got {self.top_p!r}")


@dataclass
class Generation:
    """One answer. finish_reason 'error' carries `error` (what went wrong) and an empty text."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int  # generated tokens, the end-of-turn token included when there was one
    error: str | None = None
    seconds: float = 0.0  # wall time of the request, or of the batch it was generated in
    cached: bool = False  # read from a CachedBackend's store, not generated in this call


# Called once per chat as soon as its answer is ready, with the chat's index in the input, always
# from the thread that called `generate` (so a progress bar or a database write needs no lock).
Progress = Callable[[int, Generation], None]


class Backend(Protocol):
    """Anything that answers chats: LocalBackend, HttpBackend, CachedBackend."""

    name: str  # shown in reports, e.g. "local:/path" or "http://host:8000/v1 model=x"
    identity: str  # stable id for the cache: changes when the weights or the endpoint/model change

    def generate(
        self, chats: list[list[dict[str, Any]]], params: GenerationParams, progress: Progress | None = None
    ) -> list[Generation]:
        """One Generation per chat, in input order; a chat that fails is a 'error' Generation, not an exception."""
        ...


def check_chats(chats: list[list[dict[str, Any]]]) -> list[list[dict[str, str]]]:
    """The chats as plain role/content messages; UserError naming the chat and message if one is malformed."""
    if not isinstance(chats, list):
        raise UserError(f"chats: expected a list of chats (lists of messages), got {type(chats).__name__}")
    plain = []
    for i, chat in enumerate(chats):
        if not isinstance(chat, list) or not chat:
            raise UserError(f"chats[{i}]: expected a non-empty list of {{'role', 'content'}} messages, got {chat!r:.80}")
        for j, message in enumerate(chat):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                    or not isinstance(message.get("content"), str):
                raise UserError(f"chats[{i}][{j}]: expected a message {{'role': str, 'content': str}}, got {message!r:.80}")
        if chat[-1]["role"] != "user":
            raise UserError(
                f"chats[{i}]: ends with a {chat[-1]['role']!r} message; a chat to answer ends with the user's turn "
                "(drop the reference answer before generating)"
            )
        plain.append([{"role": m["role"], "content": m["content"]} for m in chat])
    return plain

