"""The tuned weights: where `adhere train` writes them, where they are found again, and LoRA merged into its base.

    from adhere.generation.weights import tuned_weights
    folder = tuned_weights(config, needed_by="eval.models lists 'tuned'")   # workdir/train/adapter or model
    sft = tuned_weights(config, needed_by="...", stage="train")             # the SFT weights when DPO follows

LoRA training writes `adapter/` (PEFT's adapter files), full fine-tuning `model/` (a whole model
folder); both hold the tokenizer with the exact chat template of training. With a `dpo` section
the tuned model is what `adhere dpo` wrote in workdir/dpo/, and workdir/train/ holds the SFT model it started from. Training, its lineage,
export, evaluation, the pipeline's fingerprints and the server all ask here. `with_adapter` is
the one place PEFT loads an adapter for answers (LocalBackend) and for `adhere export`; `MergedCopy` merges
a live adapter into a copy for GRPO's sampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from adhere.errors import UserError

if TYPE_CHECKING:
    from adhere.config import ProjectConfig

Method = Literal["lora", "full"]
FOLDERS: dict[str, str] = {"lora": "adapter", "full": "model"}  # train.method -> the folder it writes


def weights_folder(train_dir: Path, method: Method) -> Path:
    """The folder training with `method` writes its weights to: `adapter/` (LoRA) or `model/` (full)."""
    return train_dir / FOLDERS[method]


def tuned_stage(config: ProjectConfig) -> str:
    """The stage whose weights are 'the tuned model', the last of train, dpo and grpo that adhere.yaml has."""
    return "grpo" if config.grpo is not None else "dpo" if config.dpo is not None else "train"


def find_tuned_weights(config: ProjectConfig, stage: str | None = None) -> Path | None:
    """The trained weights in workdir/<stage>/ (default `tuned_stage`): train.method's folder first, else the
    other method's; None if neither. `stage='train'` names the supervised (SFT) weights when DPO follows.

    The fallback keeps a model trained with LoRA usable after train.method changed to 'full' (or back)
    without training again.
    """
    train_dir = config.stage_dir(stage or tuned_stage(config))
    first = weights_folder(train_dir, config.train.method)
    for folder in (first, *(train_dir / name for name in FOLDERS.values() if name != first.name)):
        if folder.is_dir():
            return folder
    return None


def tuned_weights(config: ProjectConfig, *, needed_by: str, otherwise: str = "", stage: str | None = None) -> Path:
    """`find_tuned_weights`, or a UserError saying who needs them (`needed_by`) and what to do (`otherwise`)."""
    stage = stage or tuned_stage(config)
    found = find_tuned_weights(config, stage)
    if found is None:
        raise UserError(f"{needed_by} but {config.stage_dir(stage)} holds no trained weights (adapter/ or model/); "
                        f"run `adhere {stage} {config.name}` first{otherwise}")
    return found


def is_adapter(folder: Path) -> bool:
    """Whether tuned weights `folder` is LoRA's `adapter/` (loaded on the base model) rather than a whole model."""
    return folder.name == FOLDERS["lora"]


def with_adapter(model: Any, tokenizer: Any, adapter: Path, base: str) -> tuple[Any, Any]:
    """Base `model` + the LoRA `adapter` merged into plain weights, and the tokenizer training saved beside it.

    The one place PEFT loads an adapter (LocalBackend, so eval and serve, and `adhere export`); training
    builds LoRA in adhere.train.model. Merged: one matmul per layer instead of three.
    """
    merged = _merge(model, adapter, base)
    trained = trained_tokenizer(adapter)
    if trained is not None and not trained.chat_template:  # saved without one: the configured template
        trained.chat_template = tokenizer.chat_template
    return merged, trained or tokenizer


def _merge(model: Any, adapter: Path, base: str) -> Any:
    import warnings

    from peft import PeftModel

    # peft 0.21 calls transformers' deprecated `is_gradient_checkpointing` (as in adhere.train.model);
    # upstream's warning says nothing to our users. Remove when peft uses the new name.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as exc:  # shapes or module names of another base model
        raise UserError(
            f"{adapter}: the adapter does not fit the base model {base!r} ({str(exc).splitlines()[0][:200]}); "
            "load it on the base model it was trained from (model.base in the train stage's config.yaml)"
        ) from None


def trained_tokenizer(folder: Path) -> Any:
    """The tokenizer `adhere train` saved beside its weights (the exact chat template of training), or None."""
    if not (folder / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:  # batching needs one; masked out by the attention mask
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class MergedCopy:
    """A plain copy of a LoRA model for sampling, each adapted weight = the base weight + the adapter's delta,
    recomputed from the live adapter before each step's sampling (never merged back, so nothing drifts).

    Decoding through a merged copy skips the adapters' extra matmuls and PEFT's per-layer Python: on the
    embedded model, 8 answers of 64 tokens took 9.1 s instead of 10.5 s (2 CPU cores, float32, 3 runs each).
    It costs a second copy of the weights in memory (grpo.sample_merged: false samples through the adapters).
    GRPO samples from it (adhere.train.grpo).
    """

    def __init__(self, model: Any) -> None:
        import copy

        from peft.tuners.lora import LoraLayer

        self.model = copy.deepcopy(model).merge_and_unload().eval()
        self.model.requires_grad_(False)
        prefix = "base_model.model."
        self.layers = [(module, self.model.get_submodule(name.removeprefix(prefix)))
                       for name, module in model.named_modules() if isinstance(module, LoraLayer)]

    @staticmethod
    def usable(model: Any) -> bool:
        """A LoRA model whose adapters merge as plain deltas (not DoRA, whose merge rescales the weight)."""
        from peft.tuners.lora import LoraLayer

        layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        return bool(layers) and not any(any(m.use_dora.values()) for m in layers)

    def refresh(self) -> None:
        import torch

        with torch.no_grad():
            for lora, target in self.layers:
                adapter = lora.active_adapters[0]
                target.weight.copy_(lora.base_layer.weight + lora.get_delta_weight(adapter).to(target.weight.dtype))
