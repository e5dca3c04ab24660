"""The model to train: the base model, with LoRA adapters or with every weight trainable.

LoRA and full fine-tuning share the training loop; this is the one branch
where they differ. PEFT is used here and nowhere else in training.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from adhere.errors import UserError
from adhere.models import load_model
from adhere.models.config import ModelConfig
from adhere.generation.weights import is_adapter, with_adapter
from adhere.train.config import LoopConfig, TrainConfig


def linear_module_names(model: Any) -> set[str]:
    """Short names of the model's linear layers (q_proj, up_proj, ...), the output head excluded."""
    import torch

    head = model.get_output_embeddings()
    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head}


def build_model(model_cfg: ModelConfig, train_cfg: TrainConfig, device: str, loop: LoopConfig | None = None,
                start: Path | None = None) -> tuple[Any, Any]:
    """(model ready to train, tokenizer). LoRA wraps the base model with PEFT; 'full' trains it as it is.

    `loop` (default `train_cfg`) gives gradient checkpointing and precision. `start` is trained weights to
    continue from (DPO after SFT): a LoRA `adapter/` is loaded trainable on the base model (for 'full',
    merged into it), a full `model/` folder replaces the base model.
    """
    loop = loop or train_cfg
    if start is not None and not is_adapter(start):
        model_cfg = model_cfg.model_copy(update={"base": str(start), "revision": None})
    loaded = load_model(model_cfg, device=device, for_training=True)
    model = loaded.model
    if start is not None and is_adapter(start) and train_cfg.method == "full":
        model = with_adapter(model, loaded.tokenizer, start, model_cfg.base)[0]
    if loop.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (LoRA) without enable_input_require_grads.
        # transformers 5.x renamed gradient_checkpointing_enable; the old name warns until v6.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if train_cfg.method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return set_trainable_dtype(model, loop.precision == "pure_bf16"), loaded.tokenizer

    from peft import LoraConfig, PeftModel, get_peft_model

    # peft 0.21 calls transformers' deprecated `is_gradient_checkpointing` (renamed in transformers 5.x);
    # the warning is upstream's and says nothing to our users. Remove when peft uses the new name.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

    if start is not None:  # continue the adapter: its own rank and targets, its weights trainable
        if not is_adapter(start):
            raise UserError(f"{start} is a full model, and train.method is 'lora': DPO continues the SFT weights with "
                            "the same method; set train.method: full, or train the SFT adapter again with LoRA")
        model = PeftModel.from_pretrained(model, start, is_trainable=True)
        return set_trainable_dtype(model, loop.precision == "pure_bf16"), loaded.tokenizer
    lora = train_cfg.lora
    available = linear_module_names(model)
    targets = lora.target_modules or "all-linear"
    if lora.target_modules:
        missing = sorted(set(lora.target_modules) - available)
        if missing:
            raise UserError(
                f"train.lora.target_modules: {model_cfg.base!r} has no linear layers named {missing}; "
                f"it has {sorted(available)} (or leave target_modules empty for all of them)"
            )
    layers = None
    if lora.layers is not None:
        total = model.config.num_hidden_layers
        if lora.layers > total:
            raise UserError(f"train.lora.layers: {model_cfg.base!r} has {total} layers, got {lora.layers}; "
                            f"use at most {total}, or leave it empty to adapt all of them")
        layers = list(range(total - lora.layers, total))
        targets = lora.target_modules or sorted(available)  # PEFT takes layer indexes only with a list of names
    peft_config = LoraConfig(
        r=lora.r,
        layers_to_transform=layers,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        use_dora=lora.use_dora,
        use_rslora=lora.use_rslora,
        task_type="CAUSAL_LM",
    )
    return set_trainable_dtype(get_peft_model(model, peft_config), loop.precision == "pure_bf16"), loaded.tokenizer


def set_trainable_dtype(model: Any, pure_bf16: bool) -> Any:
    """Trained weights in float32 (master weights), frozen ones as loaded; with `pure_bf16` every weight in bfloat16.

    With model.dtype bf16 (the default on a bf16 GPU) AdamW would otherwise update bf16 weights in
    place, and an update under half a bf16 step (relative 2^-9, about 0.2%) rounds away: with lr 2e-5
    most of a full fine-tune would not move. Autocast still computes in bf16.
    """
    import torch

    if pure_bf16:
        return model.to(torch.bfloat16)
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model
