"""Before a run: how much data, how many steps, and how long and how much memory, measured.

    adhere train adhere.yaml --dry-run

Counts come from rendering every example with the training loss mask. Time and
memory come from a probe: a few real optimizer steps on the real model and data
in a throw-away folder. The first step is left out of the timing (it pays for
allocation and kernel selection).
"""

from __future__ import annotations

import json
import resource
import statistics
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adhere.config import ProjectConfig

PROBE_STEPS = 4


def estimate(config: ProjectConfig) -> dict[str, Any]:
    """Examples, tokens, steps, and estimated time and peak memory of `adhere train` with this config."""
    import torch

    from adhere.models import load_tokenizer
    from adhere.train.batches import build_examples, plan_steps, read_records
    from adhere.train.loop import train

    tc, data_dir = config.train, config.stage_dir("data")
    tokenizer = load_tokenizer(config.model)
    examples = build_examples(read_records(data_dir / "train.jsonl"), tokenizer, tc.max_length, str(data_dir / "train.jsonl"))
    steps_per_epoch, total_steps = plan_steps(len(examples), tc.batch_size, tc.grad_accum, tc.epochs, tc.max_steps)
    probe = config.model_copy(
        update={"train": tc.model_copy(update={"max_steps": PROBE_STEPS, "save_every": None, "eval_every": None})}
    )
    with tempfile.TemporaryDirectory() as tmp:
        probe_data = Path(tmp) / "data"  # no eval split in the probe: its time is not a training step's
        probe_data.mkdir()
        (probe_data / "train.jsonl").write_text((data_dir / "train.jsonl").read_text())
        probe = probe.model_copy(update={"workdir": tmp})
        train(probe, Path(tmp))
        rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    seconds_per_step = statistics.median(r["step_s"] for r in rows[1:])
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "examples": len(examples),
        "tokens_per_epoch": sum(len(e.input_ids) for e in examples),
        "trained_tokens_per_epoch": sum(e.trained_tokens for e in examples),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "seconds_per_step": round(seconds_per_step, 3),
        "estimated_minutes": round(seconds_per_step * total_steps / 60, 1),
        "peak_memory_gib": round(peak / 2**30, 2),
        "memory_kind": "GPU allocated" if torch.cuda.is_available() else "process RSS",
    }
