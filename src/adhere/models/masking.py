"""Render a conversation with the tokenizer's own chat template and build its loss mask.

This is the one place the loss mask is made (house style 7): training and
`adhere data inspect` both call `render`, so what you inspect is what trains.

How the assistant spans are found, on token ids (never on string offsets):

1. The whole conversation is rendered and tokenized once.
2. For each trained assistant turn i, `messages[:i]` is rendered with the
   generation prompt (its length is where the answer starts) and `messages[:i+1]`
   without it (its length is where the turn ends). Rendering prefixes with the same
   template keeps whatever the template injects (SmolLM2's default system prompt,
   Llama 3's date header) in the right place. Each prefix must be a token prefix of
   the whole rendering, or `MaskError` says why.
3. End-of-turn rule (`end_of_turn`, the one rule: generation stops at the same token,
   see `end_of_turn_token`): the span is cut just after its FIRST special token (a
   tokenizer special token or an added token marked special): ChatML's
   `<|im_end|>`, Llama 3's `<|eot_id|>`, Gemma's `<end_of_turn>`. That token is
   trained, so the model learns to stop; what the template writes after it (the
   "\\n" of ChatML and Gemma, a second special token) is not, since generation stops
   before it. A span with no special token is trained whole.
4. Post-check: the trained tokens of each span are decoded and must contain the
   message's content (stripped, since Llama 3 and Gemma trim it); else `MaskError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adhere.errors import UserError

IGNORE_INDEX = -100  # the label PyTorch's cross-entropy skips: a token that is context, not trained


class MaskError(UserError):
    """A conversation whose loss mask cannot be built or verified with this tokenizer's chat template."""


@dataclass(frozen=True)
class Rendered:
    """One rendered example: token ids, labels (IGNORE_INDEX where not trained), and whether it was cut."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def trained_tokens(self) -> int:
        """How many tokens carry loss; 0 when truncation cut every trained span (the caller decides)."""
        return sum(label != IGNORE_INDEX for label in self.labels)


def render(tokenizer: Any, messages: list[dict[str, Any]], *, max_length: int | None = None) -> Rendered:
    """Render `messages` with the tokenizer's chat template; train only weighted assistant turns.

    `max_length` keeps the first `max_length` tokens (and sets `truncated`); a cut
    that leaves nothing trained is not an error here: check `trained_tokens`.
    """
    # Templates know role and content only; `weight` is ours.
    chat = [{"role": m["role"], "content": m["content"]} for m in messages]
    input_ids = _encode(tokenizer, chat, generation_prompt=False)
    labels = [IGNORE_INDEX] * len(input_ids)
    special = special_ids(tokenizer)
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        start = _prefix_length(tokenizer, chat, input_ids, i, generation_prompt=True)
        end = _prefix_length(tokenizer, chat, input_ids, i + 1, generation_prompt=False)
        end = end_of_turn(input_ids, start, end, special)
        labels[start:end] = input_ids[start:end]
        # Checked on the whole span, before any cut, so truncation never hides a wrong mask.
        _check_span(tokenizer, input_ids[start:end], message["content"], i)
    truncated = max_length is not None and len(input_ids) > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return Rendered(input_ids=input_ids, labels=labels, truncated=truncated)


def _encode(tokenizer: Any, chat: list[dict[str, str]], *, generation_prompt: bool) -> list[int]:
    from jinja2 import TemplateError

    if not getattr(tokenizer, "chat_template", None):
        raise MaskError(f"tokenizer {_name(tokenizer)} has no chat template; use an instruct model's tokenizer")
    try:
        # sanitize_control_tokens: a record that quotes "<|im_end|>" trains it as text, not as a real
        # end of turn (which would teach the model to stop mid-answer and break the end-of-turn rule).
        encoding = tokenizer.apply_chat_template(
            chat,
            tokenize=True,
            return_dict=True,  # transformers 5 returns a BatchEncoding; ask for it explicitly
            add_generation_prompt=generation_prompt,
            sanitize_control_tokens=True,
        )
    except TemplateError as exc:
        raise MaskError(f"the chat template of {_name(tokenizer)} rejected the conversation: {exc}") from exc
    return list(encoding["input_ids"])


def _prefix_length(
    tokenizer: Any, chat: list[dict[str, str]], full: list[int], n: int, *, generation_prompt: bool
) -> int:
    """Length of the rendering of `chat[:n]`, checked to be a token prefix of `full`."""
    prefix = _encode(tokenizer, chat[:n], generation_prompt=generation_prompt)
    if full[: len(prefix)] == prefix:
        return len(prefix)
    what = f"messages[:{n}]" + (" with the generation prompt" if generation_prompt else "")
    whole = tokenizer.apply_chat_template(chat, tokenize=False)
    part = tokenizer.apply_chat_template(chat[:n], tokenize=False, add_generation_prompt=generation_prompt)
    if whole.startswith(part):
        why = (
            "The text is a prefix, but the tokenizer merges tokens across the boundary "
            "(usually whitespace at the start of the next message): strip the message content."
        )
    else:
        why = (
            "The chat template renders earlier turns differently once later turns follow "
            "(for example it drops the reasoning of earlier assistant turns): split the conversation "
            "into one example per assistant turn, or use a template that is prefix-stable."
        )
    raise MaskError(
        f"messages[{n if generation_prompt else n - 1}]: the rendering of {what} is not a token prefix of the "
        f"whole conversation's rendering with the chat template of {_name(tokenizer)}, so the assistant turn "
        f"cannot be located. {why}"
    )


def special_ids(tokenizer: Any) -> set[int]:
    """The tokenizer's special tokens and the added tokens marked special: the candidates for an end of turn."""
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, token in tokenizer.added_tokens_decoder.items() if token.special)
    return ids


def end_of_turn(input_ids: list[int], start: int, end: int, special: set[int]) -> int:
    """End of the trained span of an assistant turn in [start, end): just after its first special token, else `end`."""
    return next((k + 1 for k in range(start, end) if input_ids[k] in special), end)


def end_of_turn_token(tokenizer: Any) -> int | None:
    """The chat template's end-of-turn token, by the loss mask's own rule: the last token `render` trains.

    Generation stops at it (`adhere.generation.local.chat_stop_ids`), so the token the model learns to
    end its answer with is the token every backend stops on. None when the template writes no special
    token after an answer, or rejects this probe (generation then stops at eos alone).
    """
    probe = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]
    try:
        rendered = render(tokenizer, probe)
    except (UserError, ValueError, TypeError, KeyError, IndexError):
        return None
    last = max((k for k, label in enumerate(rendered.labels) if label != IGNORE_INDEX), default=None)
    token = None if last is None else rendered.input_ids[last]
    return token if token in special_ids(tokenizer) else None


def _check_span(tokenizer: Any, span: list[int], content: str, index: int) -> None:
    text = _decode(tokenizer, span)
    if content.strip() not in text:
        raise MaskError(
            f"messages[{index}]: the trained tokens decode to {text[:200]!r}, which does not contain the "
            f"assistant message's content, so the loss mask would train the wrong tokens. The chat template "
            f"of {_name(tokenizer)} changes or moves assistant content; check the template."
        )


def _decode(tokenizer: Any, ids: list[int]) -> str:
    # No clean-up: it rewrites " ." to "." and would make the post-check miss real content.
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _name(tokenizer: Any) -> str:
    return repr(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def format_mask(tokenizer: Any, rendered: Rendered, *, color: bool) -> str:
    """Show which tokens train, for `adhere data inspect`.

    color=True returns rich markup (trained on green, context dim); color=False
    plain text with trained runs in `[[` `]]`. Newlines show as "↵" then a newline;
    special tokens show as their text (e.g. `<|im_end|>`).
    """
    from rich.markup import escape

    runs: list[tuple[bool, list[int]]] = []
    for token, label in zip(rendered.input_ids, rendered.labels):
        trained = label != IGNORE_INDEX
        if runs and runs[-1][0] == trained:
            runs[-1][1].append(token)
        else:
            runs.append((trained, [token]))
    parts = []
    for trained, ids in runs:
        # Decoding whole runs, not single tokens, keeps multi-byte characters intact.
        text = _decode(tokenizer, ids)
        if color:
            text = escape(text).replace("\n", "↵\n")
            parts.append(f"[black on green]{text}[/]" if trained else f"[dim]{text}[/]")
        else:
            text = text.replace("\n", "↵\n")
            parts.append(f"[[{text}]]" if trained else text)
    if rendered.truncated:
        parts.append("\n[dim]… truncated[/]" if color else "\n… truncated")
    return "".join(parts)
