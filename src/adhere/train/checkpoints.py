"""Checkpoints for exact resume: trainable weights, optimizer, schedule, RNG states, data position.

A checkpoint is `run_dir/checkpoints/step-000120/`, written into a hidden
temporary folder and renamed, so a crash mid-write never leaves a folder that
resume would pick. The data position is the number of micro-batches consumed:
the batch order is a pure function of (seed, epoch), so replaying the order
and skipping that many micro-batches puts the stream exactly where it was.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from adhere.errors import UserError

PREFIX = "step-"
# Settings that change the shape or meaning of the saved tensors: resuming under other values is refused.
SHAPE_KEYS = {
    "model": ("base", "revision", "dtype", "chat_template"),
    "train": ("method", "lora", "max_length", "batch_size", "grad_accum", "seed"),
}


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The parameters being trained (LoRA's adapters, or every weight), by name."""
    return {name: p.detach().to("cpu").contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save(run_dir: Path, step: int, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any], keep_last: int) -> Path:
    """Write checkpoint `step` atomically and keep only the newest `keep_last` (and the best by eval loss)."""
    from safetensors.torch import save_file

    root = run_dir / "checkpoints"
    root.mkdir(exist_ok=True)
    final = root / f"{PREFIX}{step:06d}"
    staging = root / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    save_file(trainable_state(model), staging / "trainable.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()},
               staging / "state.pt")
    (staging / "progress.json").write_text(json.dumps({"step": step, **state}, indent=2))
    os.replace(staging, final)
    _prune(root, keep_last)
    return final


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    root = run_dir / "checkpoints"
    done = sorted(p for p in root.glob(f"{PREFIX}*") if (p / "progress.json").is_file()) if root.is_dir() else []
    return done[-1] if done else None


def load(checkpoint: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Restore weights, optimizer, schedule and RNG from `checkpoint`; returns its progress record."""
    from safetensors.torch import load_file

    weights = load_file(checkpoint / "trainable.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    # Our own files: optimizer state is tensors and numbers, which weights_only loading accepts (no pickle code).
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return json.loads((checkpoint / "progress.json").read_text())


def check_compatible(run_dir: Path, config: Any) -> None:
    """Refuse to resume when a setting that shapes the weights or the data order changed since the run began."""
    import yaml

    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text())
    now = config.model_dump(mode="json")
    changed = [f"{section}.{key}" for section, keys in SHAPE_KEYS.items() for key in keys
               if saved.get(section, {}).get(key) != now[section][key]]
    if changed:
        raise UserError(
            f"cannot resume {run_dir}: {', '.join(changed)} changed since the run began; "
            "restore them, or start over without --resume"
        )


def _prune(root: Path, keep_last: int) -> None:
    done = sorted(p for p in root.glob(f"{PREFIX}*") if (p / "progress.json").is_file())
    losses = {p: json.loads((p / "progress.json").read_text()).get("eval_loss") for p in done}
    scored = [p for p in done if losses[p] is not None]
    best = min(scored, key=lambda p: losses[p]) if scored else None
    for old in done[:-keep_last]:
        if old != best:
            shutil.rmtree(old, ignore_errors=True)


def _rng_state() -> dict[str, Any]:
    import numpy as np

    py_state = random.getstate()
    state = {"python": [py_state[0], list(py_state[1]), py_state[2]], "numpy": np.random.get_state()[1].tolist(),
             "numpy_pos": int(np.random.get_state()[2]), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
