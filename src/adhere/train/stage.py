"""Step 4, tune: supervised instruction tuning on the curated data, then (with a dpo section) preference tuning.

    adhere train adhere.yaml
    adhere dpo adhere.yaml          # writes workdir/dpo/ the same way, from workdir/train/'s weights

Writes `workdir/train/`: the LoRA adapter in PEFT's format (`adapter/`) or the
full model (`model/`), each with the tokenizer and the chat template used in
training, `metrics.jsonl` (one line per logged step), `summary.json`, and the
usual config.yaml, env.json and lineage.json.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from adhere import runs
from adhere.generation.weights import weights_folder

if TYPE_CHECKING:
    from adhere.config import ProjectConfig

Log = Callable[[dict[str, Any]], None]
# The metrics.jsonl keys TensorBoard plots: the loss and its validation, and DPO's terms (adhere.train.dpo.terms).
TENSORBOARD_KEYS = ("loss", "valid_loss", "lr", "grad_norm", "tokens_per_s", "dpo_loss", "sft_loss", "reward_accuracy",
                    "margin", "chosen_logp", "rejected_logp", "chosen_reward", "rejected_reward", "valid_reward_accuracy",
                    "valid_margin", "pg_loss", "kl", "reward", "zero_std_groups", "completion_tokens", "truncated",
                    "clip_fraction")


def run(config: ProjectConfig, log: Callable[[dict[str, Any]], None] = lambda m: None, resume: bool = False,
        stage: Literal["train", "dpo", "grpo"] = "train") -> Path:
    """Train and write `workdir/<stage>/`; with `resume`, continue from the latest checkpoint. Returns the folder.

    `stage='dpo'` preference-tunes (adhere.yaml's dpo section) from what `train` wrote; see `adhere.train.dpo`.
    `stage='grpo'` reinforces (adhere.yaml's grpo section) from what the stage before wrote; see `adhere.train.grpo`.
    """
    from adhere.errors import UserError
    from adhere.train import checkpoints, dpo, grpo, loop

    if stage == "grpo":
        if config.grpo is None:
            raise UserError("adhere grpo: adhere.yaml has no grpo section; add one (grpo: {rewards: [{name: schema}]}) "
                            "to reinforce with the spec's checks")
        settings, train, keys = config.grpo, grpo.train, grpo.RESUME_KEYS
        inputs = {"prompts": grpo.prompts_path(config)}
        data_files = list(inputs.values())
    elif stage == "dpo":
        if config.dpo is None:
            raise UserError("adhere dpo: adhere.yaml has no dpo section; add one (dpo: {beta: 0.1}) to preference-tune")
        settings, train, inputs, keys = config.dpo, dpo.train, dpo.pair_paths(config), dpo.RESUME_KEYS
        data_files = list(inputs.values())
    else:
        data_dir = config.stage_dir("data")
        inputs = {name: data_dir / f"{name}.jsonl" for name in ("train", "valid") if (data_dir / f"{name}.jsonl").is_file()}
        settings, train, keys = config.train, loop.train, checkpoints.RESUME_KEYS
        data_files = [data_dir / "train.jsonl", data_dir / "valid.jsonl"]  # as sft_task hashes them
    run_dir, checkpoint = config.stage_dir(stage), None
    if resume:
        checkpoint = checkpoints.latest(run_dir)
        if checkpoint is None:
            raise UserError(f"nothing to resume: no complete checkpoint in {run_dir / 'checkpoints'} (set {stage}.save_every)")
        checkpoints.check_compatible(run_dir, config, checkpoint, data_files, keys)
    else:
        # A fresh run: old checkpoints would mislead --resume, and an old summary would say it finished.
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        for stale in ("summary.json", dpo.REFERENCE_FILE, grpo.REFERENCE_FILE, grpo.SAMPLES_FILE):
            (run_dir / stale).unlink(missing_ok=True)
    run_dir = runs.start_stage(config, stage)
    with tensorboard(settings, run_dir, log) as log_all:
        summary = train(config, run_dir, log_all, resume=checkpoint)
    runs.write_json_atomic(run_dir / "summary.json", summary)
    plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png")
    weights = weights_folder(run_dir, config.train.method)
    runs.write_lineage(run_dir, config, inputs, {"weights": weights, "metrics": run_dir / "metrics.jsonl"})
    return run_dir


@contextmanager
def tensorboard(settings: Any, run_dir: Path, log: Log) -> Iterator[Log]:
    """`log`, also writing each metrics line as TensorBoard scalars when `settings.tensorboard` is on (one process)."""
    if not settings.tensorboard or os.environ.get("RANK", "0") != "0":
        yield log
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from adhere.errors import UserError

        raise UserError(f"{settings.section}.tensorboard needs the tensorboard package: pip install 'tensorboard>=2.15,<3'") from None
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def both(metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if key in TENSORBOARD_KEYS or key.startswith("reward_"):  # GRPO's rewards, one by one
                writer.add_scalar(f"train/{key}", value, metrics["step"])
        log(metrics)

    try:
        yield both
    finally:
        writer.close()


def plot_losses(metrics: Path, out: Path) -> Path | None:
    """Train loss per step and validation loss where measured, as a PNG beside metrics.jsonl."""
    import json

    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train", color="#4C72B0", linewidth=1)
    valid = [r for r in rows if "valid_loss" in r]
    if valid:
        ax.plot([r["step"] for r in valid], [r["valid_loss"] for r in valid], "o-", label="validation", color="#C44E52")
    ax.set_xlabel("step")
    ax.set_ylabel("loss per trained token")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
