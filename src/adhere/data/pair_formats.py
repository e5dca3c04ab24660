"""Preference-pair formats: one pure converter per format, from a raw row to a canonical pair.

The canonical pair, the shape `adhere data` writes to pairs.jsonl and preference tuning reads:

    {"messages": [prompt turns, the last one the user's],
     "chosen": {"role": "assistant", "content": str}, "rejected": {"role": "assistant", "content": str},
     "meta": {"id": str, "source": str, ...}}

Formats:
- `pair`: that record itself (what `adhere feedback export --pairs` writes).
- `trl`: TRL's `{prompt, chosen, rejected}`, each a string or a message list. With message lists
  `prompt` may be absent and chosen/rejected are whole conversations that share their prompt turns
  (TRL's implicit prompt; UltraFeedback's `chosen`/`rejected`, where `prompt` is the question again).
- `columns`: any table; `columns` maps prompt/chosen/rejected/system to column names.

Each converter returns (prompt turns, chosen turn, rejected turn) or raises `Rejection`;
`check_pair` then applies the rules every pair must meet, whatever its format.
"""

from __future__ import annotations

from typing import Any, Callable

from adhere.data.records import Rejection, check_messages

Message = dict[str, Any]
Pair = tuple[list[Message], Message, Message]
PairConverter = Callable[[dict[str, Any]], Pair]


def _turns(value: Any, field: str) -> list[Message]:
    """A side or prompt as a list of {role, content}: a string is one turn of `default` role, a mapping one turn."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise Rejection("wrong_type", f"{field}: expected a string or a non-empty message list, got {type(value).__name__}")
    turns = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise Rejection("wrong_type", f"{field}[{i}]: expected a mapping, got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if not isinstance(content, str):
            raise Rejection("wrong_type", f"{field}[{i}].content: expected a string, got {type(content).__name__}")
        turns.append({"role": role, "content": content})
    return turns


def _same(a: list[Message], b: list[Message]) -> bool:
    return [(m["role"], m["content"].strip()) for m in a] == [(m["role"], m["content"].strip()) for m in b]


def _conversation(row: dict[str, Any], field: str, prompt: list[Message] | None) -> list[Message]:
    """One side as a whole conversation: the prompt turns, then the answer (or the side's own turns)."""
    value = row.get(field)
    if value is None:
        raise Rejection("missing_field", f"missing field {field!r}")
    turns = [{"role": "assistant", "content": value}] if isinstance(value, str) else _turns(value, field)
    if not any(m["role"] == "user" for m in turns):  # an answer to the prompt
        if prompt is None:
            raise Rejection("missing_field", f"missing field 'prompt' ({field} is an answer, not a whole conversation)")
        return [*prompt, *turns]
    # A whole conversation (UltraFeedback, TRL's implicit prompt): a given prompt must be how it starts.
    if prompt is not None:
        start = turns if prompt[0]["role"] == "system" else [m for m in turns if m["role"] != "system"]
        if not _same(start[: len(prompt)], prompt):
            raise Rejection("prompt_mismatch", f"{field} is a whole conversation that does not start with the prompt")
    return turns


def from_trl(row: dict[str, Any]) -> Pair:
    """TRL: `{prompt?, chosen, rejected}`, strings or message lists; whole conversations must share their prompt."""
    prompt = row.get("prompt")
    prompt_turns = None if prompt is None else (
        [{"role": "user", "content": prompt}] if isinstance(prompt, str) else _turns(prompt, "prompt"))
    chosen, rejected = _conversation(row, "chosen", prompt_turns), _conversation(row, "rejected", prompt_turns)
    for field, side in (("chosen", chosen), ("rejected", rejected)):
        if side[-1]["role"] != "assistant":
            raise Rejection("role_order", f"{field} ends with a {side[-1]['role']} turn, not the assistant's answer")
    if not _same(chosen[:-1], rejected[:-1]):
        at = next((i for i, (a, b) in enumerate(zip(chosen[:-1], rejected[:-1])) if not _same([a], [b])),
                  min(len(chosen), len(rejected)) - 1)
        raise Rejection("prompt_mismatch", f"chosen and rejected differ before their last turn (turn {at}): "
                        "a pair answers one prompt")
    return chosen[:-1], chosen[-1], rejected[-1]


def from_pair(row: dict[str, Any]) -> Pair:
    """adhere's pair record: `{messages: [prompt turns], chosen: {role, content}, rejected: {role, content}}`."""
    if "messages" not in row:
        raise Rejection("missing_field", "missing field 'messages'")
    return from_trl({"prompt": _turns(row["messages"], "messages"), "chosen": row.get("chosen"),
                     "rejected": row.get("rejected")})


def from_pair_columns(columns: dict[str, str]) -> PairConverter:
    """A converter for any table: `columns` maps prompt/chosen/rejected/system to column names."""

    def convert(row: dict[str, Any]) -> Pair:
        missing = [f"{columns[k]!r} (mapped to {k})" for k in ("prompt", "chosen", "rejected") if row.get(columns[k]) is None]
        if missing:
            raise Rejection("missing_field", f"missing field {missing[0]}")
        prompt, chosen, rejected = (row[columns[k]] for k in ("prompt", "chosen", "rejected"))
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        system = row.get(columns["system"]) if "system" in columns else None
        if isinstance(system, str) and system.strip():
            prompt = [{"role": "system", "content": system}, *_turns(prompt, "prompt")]
        return from_trl({"prompt": prompt, "chosen": chosen, "rejected": rejected})

    return convert


PAIR_CONVERTERS: dict[str, PairConverter] = {"pair": from_pair, "trl": from_trl}

# Which fields give a pair format away, checked in this order.
PAIR_SIGNATURES = (("pair", {"messages", "chosen", "rejected"}), ("trl", {"chosen", "rejected"}))


def detect_pair_format(row: dict[str, Any]) -> str | None:
    """The pair format whose signature fields the row has, or None."""
    for name, fields in PAIR_SIGNATURES:
        if fields <= set(row):
            return name
    return None


def check_pair(prompt: list[Message], chosen: Message, rejected: Message) -> list[Message]:
    """The rules every pair meets: a valid prompt ending with the user's turn, two non-empty answers that differ.

    Returns the prompt turns as {role, content} (weights dropped: only the answers train).
    """
    for field, side in (("chosen", chosen), ("rejected", rejected)):
        if not side["content"].strip():
            raise Rejection("empty_side", f"the {field} answer is empty or whitespace")
    if " ".join(chosen["content"].split()) == " ".join(rejected["content"].split()):
        raise Rejection("identical_sides", "chosen and rejected are the same text (ignoring spacing): nothing to prefer")
    checked = check_messages([*prompt, chosen])  # roles, order, an empty user turn
    return [{"role": m["role"], "content": m["content"]} for m in checked[:-1]]
