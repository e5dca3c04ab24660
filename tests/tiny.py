"""Tiny models and tokenizers built in process, so tests never download anything.

A byte-level BPE tokenizer trained in milliseconds on a few sentences, with the
special tokens of a chat family, and a 2-layer Llama with hidden size 32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CORPUS = (
    "Review this Python code for style and best practices.",
    "def add(a, b):\n    return a + b\n",
    '{"summary": "Looks fine.", "suggestions": [{"line": 3, "rule": "unused-import"}]}',
    "The capital of France is Paris. You are a helpful assistant.",
)


def build_tiny_tokenizer(chat_template: str | None = CHATML, vocab_size: int = 400) -> Any:
    """A byte-level BPE tokenizer with ChatML special tokens (`chat_template=None` leaves it without one)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(CHATML_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(CORPUS) * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template,
    )


def build_tiny_model(vocab_size: int, seed: int = 0) -> Any:
    """A random 2-layer Llama: hidden 32, 4 heads, 64 positions; ~30k parameters plus embeddings."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def save_tiny_model(folder: Path, chat_template: str | None = CHATML, seed: int = 0) -> Path:
    """Write a tiny model and tokenizer as a Hugging Face folder with safetensors."""
    tokenizer = build_tiny_tokenizer(chat_template)
    model = build_tiny_model(len(tokenizer), seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
