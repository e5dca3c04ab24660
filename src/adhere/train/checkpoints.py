"""Checkpoints for exact resume: trainable weights, optimizer, schedule, RNG states, data position,
and the best-so-far validation state (its loss, step, patience count and weights).

A checkpoint is `run_dir/checkpoints/step-000120/`, written into a hidden
temporary folder and renamed, so a crash mid-write never leaves a folder that
resume would pick. The data position is the number of micro-batches consumed:
the batch order is a pure function of (seed, epoch), so replaying the order
and skipping that many micro-batches puts the stream exactly where it was.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from adhere.errors import UserError

PREFIX = "step-"
# Settings that change the shape of the saved tensors, the data order or the path the weights take
# (the schedule is a function of the total steps, so max_steps and epochs count): resuming under other
# values would not end where an uninterrupted run ends, so it is refused, naming the keys.
RESUME_KEYS = {
    "model": ("base", "revision", "dtype", "chat_template"),
    "train": ("method", "lora", "max_length", "batch_size", "grad_accum", "seed", "epochs", "max_steps", "lr",
              "schedule", "warmup_ratio", "weight_decay", "max_grad_norm", "precision", "eval_every",
              "early_stopping_patience"),
}


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """A copy of the parameters being trained (LoRA's adapters, or every weight), by name, on the CPU.

    A copy even on the CPU, where `.to("cpu")` would return the live parameter itself: a kept state
    must not change as the optimizer moves the weights.
    """
    return {name: p.detach().to("cpu", copy=True).contiguous() for name, p in model.named_parameters() if p.requires_grad}


def restore_trainable(model: Any, weights: dict[str, torch.Tensor]) -> None:
    """Copy `weights` (from `trainable_state`) back into `model`'s parameters."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)


class Best:
    """The best validation loss so far, its step and trainable weights; says when patience runs out."""

    def __init__(self, patience: int | None) -> None:
        self.patience, self.loss, self.step, self.state, self.bad = patience, math.inf, None, None, 0

    def update(self, step: int, valid_loss: float, model: Any) -> bool:
        """Record an evaluation; True when `patience` evaluations in a row did not improve on the best."""
        if valid_loss < self.loss:
            self.loss, self.step, self.bad = valid_loss, step, 0
            self.state = trainable_state(model)
            return False
        self.bad += 1
        return self.patience is not None and self.bad >= self.patience

    def progress(self) -> dict[str, Any]:
        """The numbers a checkpoint keeps (the weights go in their own file)."""
        return {"loss": None if self.step is None else self.loss, "step": self.step, "bad": self.bad}

    def resume(self, progress: dict[str, Any] | None, state: dict[str, torch.Tensor] | None) -> None:
        """Take back what `progress()` and the checkpoint's best weights recorded."""
        if progress and progress.get("step") is not None:
            self.loss, self.step, self.bad, self.state = progress["loss"], progress["step"], progress["bad"], state


def data_digest(paths: list[Path]) -> str:
    """sha256 over the training and validation files, so resume can tell the data changed."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def save(run_dir: Path, step: int, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any], keep_last: int,
         best: Best | None = None) -> Path:
    """Write checkpoint `step` atomically and keep only the newest `keep_last` (and the best by validation loss)."""
    from safetensors.torch import save_file

    root = run_dir / "checkpoints"
    root.mkdir(exist_ok=True)
    final = root / f"{PREFIX}{step:06d}"
    staging = root / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    save_file(trainable_state(model), staging / "trainable.safetensors")
    if best is not None and best.state is not None:
        save_file(best.state, staging / "best.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()},
               staging / "state.pt")
    best_progress = {"best": best.progress()} if best is not None else {}
    (staging / "progress.json").write_text(json.dumps({"step": step, **state, **best_progress}, indent=2))
    os.replace(staging, final)
    _prune(root, keep_last)
    return final


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    root = run_dir / "checkpoints"
    done = sorted(p for p in root.glob(f"{PREFIX}*") if (p / "progress.json").is_file()) if root.is_dir() else []
    return done[-1] if done else None


def load(checkpoint: Path, model: Any, optimizer: Any, scheduler: Any, best: Best | None = None) -> dict[str, Any]:
    """Restore weights, optimizer, schedule, RNG and the best-so-far state from `checkpoint`; returns its progress record."""
    from safetensors.torch import load_file

    restore_trainable(model, load_file(checkpoint / "trainable.safetensors"))
    # Our own files: optimizer state is tensors and numbers, which weights_only loading accepts (no pickle code).
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    progress = json.loads((checkpoint / "progress.json").read_text())
    if best is not None:
        best_file = checkpoint / "best.safetensors"
        best.resume(progress.get("best"), load_file(best_file) if best_file.is_file() else None)
    return progress


def check_compatible(run_dir: Path, config: Any, checkpoint: Path, data_files: list[Path],
                     keys: dict[str, tuple[str, ...]] = RESUME_KEYS) -> None:
    """Refuse to resume a finished run, or one whose settings or data changed since it began.

    Each refusal is a UserError that names what changed and what to do.
    """
    import yaml

    summary = run_dir / "summary.json"
    if summary.is_file():
        steps = json.loads(summary.read_text()).get("steps")
        raise UserError(f"nothing to resume: the run in {run_dir} finished (step {steps}, {summary.name}); "
                        "its weights are written. Start over without --resume to train again")
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved = yaml.safe_load(saved_path.read_text())
        now = config.model_dump(mode="json")
        changed = [f"{section}.{key} ({saved.get(section, {}).get(key)!r} -> {now[section][key]!r})"
                   for section, names in keys.items() for key in names if (saved.get(section) or {}).get(key) != now[section][key]]
        if changed:
            raise UserError(
                f"cannot resume {run_dir}: {', '.join(changed)} changed since the run began, so the resumed run "
                "would not end where the uninterrupted one does; restore them, or start over without --resume"
            )
    saved_digest = json.loads((checkpoint / "progress.json").read_text()).get("data_sha256")
    if saved_digest is not None and saved_digest != data_digest(data_files):
        raise UserError(f"cannot resume {run_dir}: the training data ({', '.join(str(p) for p in data_files)}) changed "
                        "since the run began; start over without --resume")


def _prune(root: Path, keep_last: int) -> None:
    done = sorted(p for p in root.glob(f"{PREFIX}*") if (p / "progress.json").is_file())
    losses = {p: json.loads((p / "progress.json").read_text()).get("valid_loss") for p in done}
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
