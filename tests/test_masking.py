"""Golden tests for the loss mask, on three chat-template families built in process."""

from __future__ import annotations

from functools import cache

import pytest
from rich.text import Text

from adhere.errors import UserError
from adhere.models.masking import IGNORE_INDEX, MaskError, Rendered, format_mask, render
from tiny import FAMILIES, build_family_tokenizer

SYSTEM = {"role": "system", "content": "You are terse."}
Q1 = {"role": "user", "content": "What is the capital of France?"}
A1 = {"role": "assistant", "content": "Paris."}
Q2 = {"role": "user", "content": "And 2+2?"}
A2 = {"role": "assistant", "content": "The answer is 4."}

EOT = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "gemma": "<end_of_turn>"}
# What each template writes after the end-of-turn token: context, never trained.
AFTER_EOT = {"chatml": "\n", "llama3": "", "gemma": "\n"}
# The whole rendering of [SYSTEM, Q1, A1]: pins where each template puts the system prompt.
WITH_SYSTEM = {
    "chatml": "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?"
    "<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n",
    "llama3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    "Today Date: 26 Jul 2024\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
    "What is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nParis.<|eot_id|>",
    "gemma": "<bos><start_of_turn>user\nYou are terse.\n\nWhat is the capital of France?<end_of_turn>\n"
    "<start_of_turn>model\nParis.<end_of_turn>\n",
}
FAMILY_NAMES = list(FAMILIES)


@cache
def tokenizer(family: str):
    return build_family_tokenizer(family)


def trained_runs(tok, rendered: Rendered) -> list[str]:
    """The decoded text of each contiguous run of trained tokens."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in rendered.labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return [tok.decode(run, skip_special_tokens=False) for run in runs]


def decode(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=False)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_single_turn_trains_answer_and_end_of_turn(family):
    tok = tokenizer(family)
    rendered = render(tok, [Q1, A1])
    assert trained_runs(tok, rendered) == [f"Paris.{EOT[family]}"]
    assert not rendered.truncated
    assert len(rendered.labels) == len(rendered.input_ids)
    # Labels equal input ids where trained (the shift to next-token targets happens in the loss).
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(rendered.input_ids, rendered.labels))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_system_prompt_is_rendered_by_template_and_not_trained(family):
    tok = tokenizer(family)
    rendered = render(tok, [SYSTEM, Q1, A1])
    assert decode(tok, rendered.input_ids) == WITH_SYSTEM[family]
    assert trained_runs(tok, rendered) == [f"Paris.{EOT[family]}"]


def test_injected_content_stays_context():
    # SmolLM2's template adds a default system prompt when there is none: it shifts every
    # span, which rendering prefixes with the same template accounts for.
    tok = tokenizer("chatml")
    rendered = render(tok, [Q1, A1])
    assert decode(tok, rendered.input_ids).startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    )
    assert trained_runs(tok, rendered) == ["Paris.<|im_end|>"]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_multi_turn_trains_both_answers(family):
    tok = tokenizer(family)
    rendered = render(tok, [SYSTEM, Q1, A1, Q2, A2])
    assert trained_runs(tok, rendered) == [f"Paris.{EOT[family]}", f"The answer is 4.{EOT[family]}"]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_weight_zero_turn_is_context(family):
    tok = tokenizer(family)
    rendered = render(tok, [Q1, {**A1, "weight": 0}, Q2, {**A2, "weight": 1}])
    assert trained_runs(tok, rendered) == [f"The answer is 4.{EOT[family]}"]
    # The weight key never reaches the template: the rendering equals the unweighted one.
    assert rendered.input_ids == render(tok, [Q1, A1, Q2, A2]).input_ids


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_end_of_turn_trained_and_what_follows_is_not(family):
    tok = tokenizer(family)
    rendered = render(tok, [Q1, A1, Q2, A2])
    eot = tok.convert_tokens_to_ids(EOT[family])
    last = max(k for k, label in enumerate(rendered.labels) if label != IGNORE_INDEX)
    assert rendered.input_ids[last] == eot
    assert decode(tok, rendered.input_ids[last + 1 :]) == AFTER_EOT[family]
    assert rendered.labels.count(eot) == 2  # one per trained turn; the user turns' are context


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_truncation_cuts_from_the_right(family):
    tok = tokenizer(family)
    messages = [Q1, A1, Q2, A2]
    full = render(tok, messages)
    # Cut just before the last end-of-turn token: the second answer keeps its text only.
    eot = tok.convert_tokens_to_ids(EOT[family])
    cut = max(k for k, token in enumerate(full.input_ids) if token == eot)
    rendered = render(tok, messages, max_length=cut)
    assert rendered.truncated
    assert rendered.input_ids == full.input_ids[:cut]
    assert rendered.labels == full.labels[:cut]
    assert trained_runs(tok, rendered) == [f"Paris.{EOT[family]}", "The answer is 4."]
    assert rendered.trained_tokens == full.trained_tokens - 1


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_truncation_to_nothing_trained_does_not_raise(family):
    tok = tokenizer(family)
    rendered = render(tok, [Q1, A1], max_length=5)
    assert rendered.truncated and len(rendered.input_ids) == 5
    assert rendered.trained_tokens == 0


def test_max_length_at_or_above_length_does_not_truncate():
    tok = tokenizer("llama3")
    full = render(tok, [Q1, A1])
    assert render(tok, [Q1, A1], max_length=len(full.input_ids)) == full


def test_chatml_labels_pinned():
    tok = tokenizer("chatml")
    rendered = render(tok, [Q1, A1])
    # 62 context tokens (default system prompt, question, generation prompt), then
    # "P" "aris" "." "<|im_end|>" trained, then the template's "\n" as context.
    assert len(rendered.input_ids) == 67
    assert rendered.input_ids[-5:] == [50, 309, 16, 2, 201]
    assert rendered.labels == [IGNORE_INDEX] * 62 + [50, 309, 16, 2, IGNORE_INDEX]
    assert rendered.trained_tokens == 4


def test_quoted_control_token_is_text_not_end_of_turn():
    tok = tokenizer("chatml")
    answer = {"role": "assistant", "content": "End a turn with <|im_end|> in ChatML."}
    rendered = render(tok, [Q1, answer])
    assert trained_runs(tok, rendered) == ["End a turn with <|im_end|> in ChatML.<|im_end|>"]
    assert rendered.labels.count(tok.convert_tokens_to_ids("<|im_end|>")) == 1


# Qwen3-style: earlier assistant turns lose their reasoning once a later turn follows.
DROPS_REASONING = (
    "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
    "{% set content = m['content'].split('</think>')[-1] %}{% else %}{% set content = m['content'] %}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + content + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_template_that_is_not_prefix_stable_raises():
    tok = build_family_tokenizer("chatml")
    tok.chat_template = DROPS_REASONING
    thinking = {"role": "assistant", "content": "<think>Recall.</think>Paris."}
    assert render(tok, [Q1, thinking]).trained_tokens > 0  # fine while it is the last turn
    with pytest.raises(MaskError, match=r"messages\[1\].*renders earlier turns differently") as caught:
        render(tok, [Q1, thinking, Q2, A2])
    assert isinstance(caught.value, UserError)


def test_token_merge_across_boundary_raises():
    # "\n" ending the generation prompt merges with leading indentation ("\n   " is one token).
    tok = tokenizer("chatml")
    with pytest.raises(MaskError, match=r"messages\[1\].*merges tokens across the boundary"):
        render(tok, [Q1, {"role": "assistant", "content": "    return a + b"}])


def test_post_check_catches_template_that_changes_content():
    tok = build_family_tokenizer("chatml")
    tok.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + (m['content'] | upper) + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    with pytest.raises(MaskError, match=r"messages\[1\]: the trained tokens decode to 'PARIS"):
        render(tok, [Q1, A1])


def test_template_exception_becomes_mask_error():
    tok = tokenizer("gemma")
    with pytest.raises(MaskError, match="roles must alternate"):
        render(tok, [Q1, Q2, A2])


def test_missing_chat_template_raises():
    tok = build_family_tokenizer("chatml")
    tok.chat_template = None
    with pytest.raises(MaskError, match="no chat template"):
        render(tok, [Q1, A1])


def test_format_mask_plain_golden():
    tok = tokenizer("chatml")
    shown = format_mask(tok, render(tok, [SYSTEM, Q1, A1]), color=False)
    assert shown == (
        "<|im_start|>system↵\nYou are terse.<|im_end|>↵\n"
        "<|im_start|>user↵\nWhat is the capital of France?<|im_end|>↵\n"
        "<|im_start|>assistant↵\n[[Paris.<|im_end|>]]↵\n"
    )


def test_format_mask_plain_marks_truncation():
    tok = tokenizer("llama3")
    shown = format_mask(tok, render(tok, [Q1, A1], max_length=3), color=False)
    assert shown == "<|begin_of_text|><|start_header_id|>sy\n… truncated"


def test_format_mask_color_is_valid_rich_markup():
    tok = tokenizer("gemma")
    question = {"role": "user", "content": "Is [bold] markup?"}
    shown = format_mask(tok, render(tok, [question, A1]), color=True)
    text = Text.from_markup(shown)
    # The user's brackets are escaped, not read as markup; the arrows mark newlines.
    assert text.plain == (
        "<bos><start_of_turn>user↵\nIs [bold] markup?<end_of_turn>↵\n<start_of_turn>model↵\n"
        "Paris.<end_of_turn>↵\n"
    )
    trained = [text.plain[span.start : span.end] for span in text.spans if span.style == "black on green"]
    assert trained == ["Paris.<end_of_turn>"]


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("eos", ["own", "pad"])
def test_the_trained_end_of_turn_is_where_local_backend_stops(family, eos):
    """One end-of-turn rule: the last token the loss mask trains is in LocalBackend's stop ids, eos or not."""
    from adhere.generation import LocalBackend
    from tiny import FAMILIES, build_tiny_model

    tok = build_family_tokenizer(family)
    if eos == "pad":  # eos is no longer the end of turn (it is for llama3): only the template's rule can find it
        tok.eos_token = FAMILIES[family]["pad"]
    model = build_tiny_model(len(tok))
    model.generation_config.eos_token_id = None
    rendered = render(tok, [Q1, A1, Q2, A2])
    trained_ends = {rendered.input_ids[k] for k, label in enumerate(rendered.labels)
                    if label != IGNORE_INDEX and (k + 1 == len(rendered.labels) or rendered.labels[k + 1] == IGNORE_INDEX)}
    assert trained_ends == {tok.convert_tokens_to_ids(EOT[family])}
    stops = LocalBackend(model, tok, name=family, weights_id="w").stop_ids
    assert trained_ends <= stops
    assert stops - trained_ends <= {tok.eos_token_id}  # nothing else: eos and the end of turn


def test_end_of_turn_is_the_first_special_token_after_the_answer():
    """A template that writes two special tokens after an answer trains (and stops at) the first one only."""
    from adhere.models.masking import end_of_turn_token

    tok = build_family_tokenizer("chatml")
    tok.chat_template = tok.chat_template.replace("'<|im_end|>' + '\n'", "'<|im_end|><|endoftext|>' + '\n'")
    assert "<|im_end|><|endoftext|>" in tok.apply_chat_template([Q1, A1], tokenize=False)
    rendered = render(tok, [Q1, A1])
    assert trained_runs(tok, rendered) == ["Paris.<|im_end|>"]
    assert end_of_turn_token(tok) == tok.convert_tokens_to_ids("<|im_end|>")
