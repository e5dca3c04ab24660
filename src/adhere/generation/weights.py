"""The tuned weights: the one place that knows where `adhere train` writes them and finds them again.

    from adhere.generation.weights import tuned_weights
    folder = tuned_weights(config, needed_by="eval.models lists 'tuned'")   # workdir/train/adapter or model

LoRA training writes `adapter/` (PEFT's adapter files), full fine-tuning `model/` (a whole model
folder); both hold the tokenizer with the exact chat template of training. Training, its lineage,
export, evaluation, the pipeline's fingerprints and the server all ask here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from adhere.errors import UserError

if TYPE_CHECKING:
    from adhere.config import ProjectConfig

Method = Literal["lora", "full"]
FOLDERS: dict[str, str] = {"lora": "adapter", "full": "model"}  # train.method -> the folder it writes


def weights_folder(train_dir: Path, method: Method) -> Path:
    """The folder training with `method` writes its weights to: `adapter/` (LoRA) or `model/` (full)."""
    return train_dir / FOLDERS[method]


def find_tuned_weights(config: ProjectConfig) -> Path | None:
    """The trained weights in workdir/train/: train.method's folder first, else the other method's; None if neither.

    The fallback keeps a model trained with LoRA usable after train.method changed to 'full' (or back)
    without training again.
    """
    train_dir = config.stage_dir("train")
    first = weights_folder(train_dir, config.train.method)
    for folder in (first, *(train_dir / name for name in FOLDERS.values() if name != first.name)):
        if folder.is_dir():
            return folder
    return None


def tuned_weights(config: ProjectConfig, *, needed_by: str, otherwise: str = "") -> Path:
    """`find_tuned_weights`, or a UserError saying who needs them (`needed_by`) and what to do (`otherwise`)."""
    found = find_tuned_weights(config)
    if found is None:
        raise UserError(f"{needed_by} but {config.stage_dir('train')} holds no trained weights (adapter/ or model/); "
                        f"run `adhere train {config.name}` first{otherwise}")
    return found


def is_adapter(folder: Path) -> bool:
    """Whether tuned weights `folder` is LoRA's `adapter/` (loaded on the base model) rather than a whole model."""
    return folder.name == FOLDERS["lora"]
