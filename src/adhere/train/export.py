"""Export the tuned model as one folder that transformers loads with no adhere code.

    adhere export adhere.yaml            # writes workdir/export/

LoRA adapters are merged into the base weights (`generation.weights.with_adapter`). The
folder holds safetensors weights, the tokenizer with the exact chat template
used in training, a generation_config.json that stops at the template's
end-of-turn token and at eos (the stop list `LocalBackend` uses), and a
README.md model card with the base model, the data lineage, the
hyperparameters and the final losses.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adhere import runs

if TYPE_CHECKING:
    from adhere.config import ProjectConfig


def run(config: ProjectConfig, out: Path | None = None) -> Path:
    """Write the merged model to `out` (default workdir/export/); return the folder."""
    import torch

    from adhere.generation.local import stop_token_ids
    from adhere.generation.weights import is_adapter, trained_tokenizer, tuned_weights, with_adapter
    from adhere.models import load_model

    train_dir = config.stage_dir("train")
    weights = tuned_weights(config, needed_by="adhere export merges the tuned model")
    out = out or config.stage_dir("export")
    staging = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    if is_adapter(weights):  # the tokenizer beside the weights: the chat template exactly as training used it
        loaded = load_model(config.model, device="cpu")
        model, tokenizer = with_adapter(loaded.model, loaded.tokenizer, weights, config.model.base)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32, use_safetensors=True)
        tokenizer = trained_tokenizer(weights) or AutoTokenizer.from_pretrained(weights)
    # LocalBackend's stop list, so plain `generate` on this folder stops where adhere's answers do: the end
    # of turn as well as eos where they differ (Gemma's <end_of_turn> and <eos>). One id stays an int.
    stops = sorted(stop_token_ids(tokenizer, model))
    model.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    (staging / "README.md").write_text(model_card(config, train_dir), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    runs.write_lineage(out, config, {"weights": weights}, {"model": out / "model.safetensors"})
    return out


def model_card(config: ProjectConfig, train_dir: Path) -> str:
    """A model card: what it was tuned for, from what, on which data (by hash), how, and with what loss."""
    summary = _read_json(train_dir / "summary.json")
    lineage = _read_json(train_dir / "lineage.json")
    data = lineage.get("inputs", {})
    lines = [
        f"# {config.name}",
        "",
        f"Instruction-tuned with adhere from `{config.model.base}` "
        f"for the task `{config.spec.task}`. {config.spec.description}".rstrip(),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        'model = AutoModelForCausalLM.from_pretrained("PATH")',
        'tokenizer = AutoTokenizer.from_pretrained("PATH")',
        'ids = tokenizer.apply_chat_template([{"role": "user", "content": "..."}], add_generation_prompt=True, return_tensors="pt")',
        "```",
        "",
        "## Training",
        "",
        f"- method: {config.train.method}" + (f" (LoRA r={config.train.lora.r}, alpha={config.train.lora.alpha})" if config.train.method == "lora" else ""),
        f"- learning rate {config.train.lr}, {config.train.schedule} schedule, batch {config.train.batch_size} x {config.train.grad_accum} accumulation, max length {config.train.max_length}",
        f"- steps: {summary.get('steps')}, trained tokens: {summary.get('trained_tokens')}",
        f"- final train loss: {_fmt(summary.get('final_train_loss'))}, final validation loss: {_fmt(summary.get('final_valid_loss'))}"
        + (f" (written: the best, step {summary['best_step']})" if summary.get("best_step") not in (None, summary.get("steps")) else ""),
        "",
        "## Data",
        "",
    ]
    lines += [f"- {name}: `{entry['path']}` (sha256 `{entry['sha256'][:16]}...`)" for name, entry in data.items()] or ["- unknown"]
    if config.spec.system_prompt:
        lines += ["", "## System prompt", "", config.spec.system_prompt]
    return "\n".join(lines) + "\n"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a"
