"""Tiny models and tokenizers built in process, so tests never download anything.

A byte-level BPE tokenizer trained in milliseconds on a few sentences, with the
special tokens of a chat family, and a 2-layer Llama with hidden size 32.
"""

from __future__ import annotations

import string
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


def build_tiny_model(vocab_size: int, seed: int = 0, hidden_size: int = 32) -> Any:
    """A random 2-layer Llama: hidden 32 (by default), 4 heads, 256 positions; ~30k parameters plus embeddings."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
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


# --- Chat-template families, for the loss-mask golden tests -------------------
# Each family is (special tokens, bos, eos, pad, chat template). The templates are
# faithful copies of the real ones, trimmed of tool calling and multimodal content.

# SmolLM2-Instruct's ChatML: injects a default system prompt when the first message is not system.
SMOLLM2_CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Llama-3.1-Instruct: always writes a system header with a knowledge/today date, trims content.
# `date_string` is fixed (the real template falls back to "26 Jul 2024" too) so goldens stay stable.
LLAMA3 = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\n' }}"
    "{{- 'Today Date: ' + date_string + '\n\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{{- message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)
# Gemma-3-it: no system role (its text is folded into the first user turn), assistant is "model".
GEMMA = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
# The regex Llama 3's tokenizer.json splits with before byte-level BPE (newline runs stay whole).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
FAMILIES: dict[str, dict[str, Any]] = {
    "chatml": {
        "specials": ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        "bos": "<|im_start|>", "eos": "<|im_end|>", "pad": "<|endoftext|>", "template": SMOLLM2_CHATML,
    },
    "llama3": {
        "specials": ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": "<|end_of_text|>", "template": LLAMA3,
    },
    "gemma": {
        "specials": ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"),
        "bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "template": GEMMA,
    },
}
CHAT_CORPUS = CORPUS + (
    "Hello! How can I help you today?\n\nThe answer is 4.",
    "What is the capital of France? Paris is the capital.",
    "user assistant model system\n\nYou are terse.",
)


def build_family_tokenizer(family: str, vocab_size: int = 500) -> Any:
    """A tiny BPE tokenizer with the special tokens, pre-tokenizer style and chat template of a family.

    chatml: GPT-2 byte-level (as SmolLM2); llama3: Llama 3's split regex, then byte level;
    gemma: SentencePiece-style ("▁" marks a space and starts a piece; a newline may merge with a word).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = FAMILIES[family]
    if family == "gemma":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
        tok.decoder = decoders.Metaspace(prepend_scheme="never")
        alphabet = sorted(set(string.printable.replace(" ", "▁")))
    else:
        tok = Tokenizer(models.BPE())
        if family == "llama3":
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ])
        else:
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(spec["specials"]), initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(list(CHAT_CORPUS) * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec["bos"],
        eos_token=spec["eos"],
        pad_token=spec["pad"],
        chat_template=spec["template"],
    )


# --- The tiny model as a GGUF file, for the .gguf loading and conversion tests -------------------


def save_tiny_gguf(path: Path, seed: int = 0, pre_tokenizer: str = "smollm") -> Path:
    """Write the model and tokenizer of `save_tiny_model(seed=seed)` as a float32 llama GGUF file.

    Laid out as llama.cpp's convert_hf_to_gguf.py does: GGUF tensor names, q/k rows permuted for
    its rope (transformers undoes that on load), no output.weight (tied embeddings), and the
    vocabulary, merges, special ids and chat template as `tokenizer.*` metadata. float32 keeps
    the round trip exact, so the loaded logits equal the folder's.
    """
    import json

    import gguf
    import numpy as np

    tokenizer = build_tiny_tokenizer(CHATML)
    model = build_tiny_model(len(tokenizer), seed=seed)
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(len(tokenizer))

    tokens = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer)
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in CHATML_SPECIALS else 1 for token in tokens])  # 3: control
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_unk_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(CHATML)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    heads = {"q_proj": cfg.num_attention_heads, "k_proj": cfg.num_key_value_heads}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        module, suffix = name.rsplit(".", 1)
        array = tensor.numpy()
        n_head = heads.get(module.rsplit(".", 1)[-1])
        if n_head:  # llama.cpp's permute for its rotary layout
            array = array.reshape(n_head, 2, array.shape[0] // n_head // 2, *array.shape[1:]).swapaxes(1, 2)
            array = array.reshape(tensor.shape)
        writer.add_tensor(f"{names.get_name(module)}.{suffix}", np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
