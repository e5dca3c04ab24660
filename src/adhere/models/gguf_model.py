"""GGUF files as plain transformers models: load one, or convert it once into a safetensors folder.

transformers reads a GGUF with `from_pretrained(folder, gguf_file=name)` and
de-quantizes every tensor to float (about 13 s for the 98 MB embedded
SmolLM2-135M on 2 cores, plus 4 s to rebuild its tokenizer). Two upstream
gaps are closed here, where they arise: the model comes back marked as quantized
(so it cannot be saved), and a SmolLM tokenizer loses its digit split.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

MANIFEST = "adhere-manifest.json"

# llama.cpp records the pre-tokenizer a vocabulary was trained with in `tokenizer.ggml.pre`.
# transformers 5.24 rebuilds it only for the names in its GGUF_PRE_TOKENIZER_SPLITS, which lacks
# "smollm", so the embedded model's tokenizer came back as plain GPT-2 byte level. llama.cpp's
# "smollm" splits every digit off first (`\p{N}`, then the GPT-2 regex: in tokenizers terms
# Digits(individual_digits) then ByteLevel); without it "\n 7" is 3 tokens (Ċ Ġ 7), with it 2 (ĊĠ 7).
# Remove when transformers maps "smollm" itself (the check below then leaves its split alone).
DIGIT_SPLIT_PRE_TOKENIZERS = {"smollm"}


def load_gguf(path: Path, dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a .gguf file, de-quantized to `dtype` (None: float32) in a plain model."""
    from transformers import AutoModelForCausalLM, GgufConfig

    tokenizer = load_gguf_tokenizer(path)
    # dequantize=True unpacks every weight to a dense tensor. Without it, for the architectures transformers
    # has GGUF kernels for (when the `kernels` package is installed), weights stay packed in GgufLinear
    # modules, which neither save as safetensors nor train.
    loaded = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=dtype, quantization_config=GgufConfig(dequantize=True)
    )
    return plain_copy(loaded), tokenizer


def load_gguf_tokenizer(path: Path) -> Any:
    """The tokenizer described by a .gguf file's metadata (about 4 s for a 49k vocabulary), weights untouched."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    _restore_digit_split(tokenizer, path)
    return tokenizer


def plain_copy(loaded: Any) -> Any:
    """The same weights (shared, not copied) in a model that transformers does not consider quantized.

    transformers loads every GGUF through its GGUF quantizer, even when all weights end up as plain
    float tensors, and a model with that quantizer attached refuses `save_pretrained` ("The model is
    quantized with gguf and is not serializable", GgufHfQuantizer.is_serializable() is False in
    transformers 5.24) and reads as quantized to PEFT. So: build an ordinary model of the same
    architecture on the meta device (no memory, no random init) from the config without
    `quantization_config`, and move the loaded tensors in (`assign=True`). Tied embeddings stay tied:
    `tie_weights()` points lm_head back at the input embeddings, so the file stores them once.
    Non-persistent buffers (rotary `inv_freq`) are not in a state dict and are moved one by one.
    Remove when transformers can save a de-quantized GGUF model.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    for name, buffer in loaded.named_buffers():
        module, _, attr = name.rpartition(".")
        setattr(plain.get_submodule(module), attr, buffer)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    plain.eval()
    return plain


def convert_gguf(source: Path, folder: Path, manifest: dict[str, Any]) -> Path:
    """Convert a .gguf file into a Hugging Face folder (float safetensors, config, tokenizer), atomically.

    Everything is written into a staging folder beside `folder`, the manifest last, and then renamed
    into place: a crash leaves no folder, or the previous one, never a half-written folder that looks valid.
    The float dtype is kept as de-quantized (float32), so the folder's logits equal the GGUF's exactly.
    """
    import torch

    start = time.perf_counter()
    model, tokenizer = load_gguf(source, torch.float32)
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        manifest = {**manifest, "convert_seconds": round(time.perf_counter() - start, 1)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace(folder, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _replace(folder: Path, staging: Path) -> None:
    """Move `staging` to `folder`; an old `folder` is moved aside first and removed after."""
    old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)


def _restore_digit_split(tokenizer: Any, path: Path) -> None:
    from tokenizers import pre_tokenizers

    backend = tokenizer.backend_tokenizer
    if _metadata(path, "tokenizer.ggml.pre") not in DIGIT_SPLIT_PRE_TOKENIZERS:
        return
    if not isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel):
        return  # transformers already built a split for it
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )


def _metadata(path: Path, key: str) -> Any:
    """One metadata value of a .gguf file."""
    try:  # transformers 5's reader skips the 49k-entry token arrays: 13 ms, where gguf.GGUFReader takes 2.4 s
        from transformers.integrations.gguf.reader import read_gguf_metadata
    except ImportError:
        from gguf import GGUFReader

        field = GGUFReader(path).fields.get(key)
        return None if field is None else field.contents()
    return read_gguf_metadata(str(path))[0].get(key)
