"""`adhere export` on a Gemma-family tiny model: the folder stops where adhere's own generation stops.

    .venv/bin/python -m pytest tests/test_export.py -q     # a few seconds, no network

The train stage's output is written here directly (a LoRA adapter or a full model folder, each with
the tokenizer beside it, as `adhere train` saves them), so these tests need no training run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import build_family_tokenizer, build_tiny_model

from adhere.config import load_config
from adhere.generation import LocalBackend
from adhere.train.export import run as export

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def gemma_model(tokenizer: Any) -> Any:
    """The tiny Llama with the Gemma tokenizer's special ids, as a Gemma checkpoint's config has them."""
    model = build_tiny_model(len(tokenizer), seed=0)
    for config in (model.config, model.generation_config):
        config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def gemma_project(tmp_path: Path, method: str) -> Path:
    """A project whose base model is the Gemma-family tiny model and whose train stage has run."""
    tokenizer = build_family_tokenizer("gemma")
    base = tmp_path / "base"
    gemma_model(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    train_dir = tmp_path / "runs" / "p" / "train"
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        weights = train_dir / "adapter"
        peft = get_peft_model(gemma_model(tokenizer), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                                 init_lora_weights=False))
        peft.save_pretrained(weights)
    else:
        weights = train_dir / "model"
        gemma_model(tokenizer).save_pretrained(weights)
    tokenizer.save_pretrained(weights)
    path = tmp_path / "adhere.yaml"
    path.write_text(json.dumps({"name": "p", "model": {"base": str(base)}, "train": {"method": method}}))
    return path


class EndTurnAt:
    """A logits processor that makes token `token` the only choice at generated position `step`."""

    def __init__(self, prompt_length: int, step: int, token: int) -> None:
        self.at, self.token = prompt_length + step, token

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] == self.at:
            scores = torch.full_like(scores, float("-inf"))
            scores[:, self.token] = 0.0
        return scores


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft 0.21, upstream
@pytest.mark.parametrize("method", ["lora", "full"])
def test_export_stops_at_end_of_turn_and_eos_as_local_backend_does(tmp_path: Path, method: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    folder = export(load_config(gemma_project(tmp_path, method)))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    end_of_turn, eos = tokenizer.convert_tokens_to_ids(["<end_of_turn>", "<eos>"])
    assert end_of_turn != eos
    # Issue 14, defect 13: the folder's generation config held eos alone, so generation ran past the turn.
    written = json.loads((folder / "generation_config.json").read_text())["eos_token_id"]
    assert written == sorted([eos, end_of_turn])
    assert set(written) == LocalBackend.load(folder).stop_ids  # one stop list, in adhere and out of it

    # Plain transformers, no adhere code: a model that ends its turn at the 3rd token stops there.
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    width = ids["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=10, do_sample=False,
                             logits_processor=LogitsProcessorList([EndTurnAt(width, 2, end_of_turn)]))
    assert out[0, width:].tolist()[-1] == end_of_turn and out.shape[1] == width + 3
