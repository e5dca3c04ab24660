"""The canonical record, the one shape every stage after `data` reads.

    {"messages": [{"role": "system" | "user" | "assistant", "content": str, "weight": 0 | 1}],
     "meta": {"source": ..., "row": ..., ...}}

`weight` is optional (default 1) and only matters on assistant turns: weight 0
keeps a turn as context without training on it. Multi-turn is allowed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adhere.errors import UserError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Rejection(Exception):
    """Why a row was dropped: a rule name (stable, for counting) and a reason for people."""

    rule: str
    reason: str


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """Validate a messages list; return it with weights normalised, or raise Rejection.

    Rules: each message is a mapping with a known role and string content; the
    first non-system turn is the user's; no two assistant turns in a row; the
    conversation ends with a non-empty assistant turn that trains.
    """
    if not isinstance(messages, list) or not messages:
        raise Rejection("wrong_type", f"messages: expected a non-empty list, got {_kind(messages)}")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise Rejection("wrong_type", f"messages[{i}]: expected a mapping, got {_kind(message)}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise Rejection("unknown_role", f"messages[{i}].role: {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise Rejection("wrong_type", f"messages[{i}].content: expected a string, got {_kind(content)}")
        weight = message.get("weight", 1)
        if weight not in (0, 1) or isinstance(weight, bool):
            raise Rejection("wrong_type", f"messages[{i}].weight: expected 0 or 1, got {weight!r}")
        out.append({"role": role, "content": content, "weight": int(weight)})
    _check_order(out)
    return out


def _check_order(messages: list[dict[str, Any]]) -> None:
    for i, message in enumerate(messages):
        if message["role"] == "system" and i > 0:
            raise Rejection("role_order", f"messages[{i}]: a system message may only come first")
        if message["role"] == "assistant":
            before = [m["role"] for m in messages[:i] if m["role"] != "system"]
            if not before:
                raise Rejection("role_order", f"messages[{i}]: an assistant turn with no user turn before it")
            if before[-1] == "assistant":
                raise Rejection("role_order", f"messages[{i}]: two assistant turns in a row")
        if message["role"] == "user" and i > 0 and messages[i - 1]["role"] == "user":
            raise Rejection("role_order", f"messages[{i}]: two user turns in a row")
    last = messages[-1]
    if last["role"] != "assistant":
        raise Rejection("role_order", f"the conversation ends with a {last['role']} turn, not the assistant's response")
    trained = [m for m in messages if m["role"] == "assistant" and m["weight"] == 1]
    if not trained:
        raise Rejection("no_trained_turn", "every assistant turn has weight 0, so the example trains nothing")
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and not message["content"].strip():
            raise Rejection("empty_response", f"messages[{i}]: the assistant turn is empty or whitespace")
        if message["role"] == "user" and not message["content"].strip():
            raise Rejection("empty_prompt", f"messages[{i}]: the user turn is empty or whitespace")


def prompt_text(record: dict[str, Any]) -> str:
    """All user turns joined: what the model is asked (for dedup, decontamination, diversity)."""
    return "\n".join(m["content"] for m in record["messages"] if m["role"] == "user")


def response_text(record: dict[str, Any]) -> str:
    """All trained assistant turns joined: what the model learns to say."""
    return "\n".join(m["content"] for m in record["messages"] if m["role"] == "assistant" and m.get("weight", 1))


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def read_records(path: Path) -> list[dict[str, Any]]:
    """Canonical records from a JSONL file written by `adhere data`."""
    if not path.is_file():
        raise UserError(f"{path}: not found; run `adhere data adhere.yaml` first")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not valid JSON ({exc.msg}); re-run `adhere data`") from None
    return records
