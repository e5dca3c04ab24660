"""Input formats: one pure converter per format, from a raw row to canonical messages.

Each converter takes a row (a dict of fields) and returns the messages list, or
raises `Rejection` naming the field that is missing or of the wrong type.
Alpaca's optional `input` is folded into the user turn as

    {instruction}

    {input}

(the instruction, a blank line, then the input), the layout of the Alpaca
prompt without its fixed preamble, which the chat template replaces.
"""

from __future__ import annotations

from typing import Any, Callable

from adhere.data.records import Rejection, check_messages

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "system": "system",
}


def _text(row: dict[str, Any], field: str, *, required: bool = True) -> str | None:
    value = row.get(field)
    if value is None:
        if required:
            raise Rejection("missing_field", f"missing field {field!r}")
        return None
    if not isinstance(value, str):
        raise Rejection("wrong_type", f"{field}: expected a string, got {type(value).__name__}")
    return value


def alpaca_messages(instruction: str, context: str | None, output: str, system: str | None) -> list[dict[str, Any]]:
    """Alpaca fields as chat turns; a non-empty `context` (Alpaca's `input`) follows the instruction after a blank line."""
    user = f"{instruction}\n\n{context}" if context and context.strip() else instruction
    messages = [{"role": "system", "content": system}] if system and system.strip() else []
    return check_messages(messages + [{"role": "user", "content": user}, {"role": "assistant", "content": output}])


def from_alpaca(row: dict[str, Any]) -> list[dict[str, Any]]:
    """`{instruction, input?, output, system?}`."""
    return alpaca_messages(
        _text(row, "instruction") or "", _text(row, "input", required=False), _text(row, "output") or "",
        _text(row, "system", required=False),
    )


def from_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI chat: `{messages: [{role, content, weight?}, ...]}`."""
    if "messages" not in row:
        raise Rejection("missing_field", "missing field 'messages'")
    return check_messages(row["messages"])


def from_sharegpt(row: dict[str, Any]) -> list[dict[str, Any]]:
    """ShareGPT: `{conversations: [{from: human|gpt|system, value}, ...]}`."""
    turns = row.get("conversations")
    if turns is None:
        raise Rejection("missing_field", "missing field 'conversations'")
    if not isinstance(turns, list):
        raise Rejection("wrong_type", f"conversations: expected a list, got {type(turns).__name__}")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise Rejection("wrong_type", f"conversations[{i}]: expected a mapping, got {type(turn).__name__}")
        speaker = turn.get("from")
        if speaker not in SHAREGPT_ROLES:
            known = ", ".join(sorted(SHAREGPT_ROLES))
            raise Rejection("unknown_role", f"conversations[{i}].from: {speaker!r} is not a known speaker ({known})")
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": turn.get("value")})
    return check_messages(messages)


def from_prompt_completion(row: dict[str, Any]) -> list[dict[str, Any]]:
    """`{prompt, completion}` strings."""
    prompt, completion = _text(row, "prompt") or "", _text(row, "completion") or ""
    return check_messages([{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}])


def from_columns(columns: dict[str, str]) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """A converter for any table: `columns` maps instruction/input/output/system to column names."""

    def convert(row: dict[str, Any]) -> list[dict[str, Any]]:
        def field(name: str, required: bool) -> str | None:
            column = columns.get(name)
            if column is None:
                return None
            try:
                return _text(row, column, required=required)
            except Rejection as exc:
                raise Rejection(exc.rule, f"{exc.reason} (mapped to {name})") from None

        return alpaca_messages(
            field("instruction", True) or "", field("input", False), field("output", True) or "", field("system", False)
        )

    return convert


CONVERTERS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "alpaca": from_alpaca,
    "messages": from_messages,
    "sharegpt": from_sharegpt,
    "prompt_completion": from_prompt_completion,
}

# Which fields give a format away, checked in this order.
SIGNATURES = (
    ("messages", {"messages"}),
    ("sharegpt", {"conversations"}),
    ("alpaca", {"instruction", "output"}),
    ("prompt_completion", {"prompt", "completion"}),
)


def detect_format(row: dict[str, Any]) -> str | None:
    """The format whose signature fields the row has, or None."""
    for name, fields in SIGNATURES:
        if fields <= set(row):
            return name
    return None
