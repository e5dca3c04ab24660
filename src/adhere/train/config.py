"""The `train` and `dpo` sections of adhere.yaml: how to tune (step 4), and how to prefer (step 4b).

Both run the one training loop, so they share its settings (`LoopConfig`); `train` adds the method
and LoRA's shape, which DPO follows, and `dpo` adds what preference tuning needs.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from adhere.config_fields import Fraction, NonNegativeFloat, PositiveFloat, PositiveInt, Section, error_at
from adhere.self_pairs.config import SelfPairsConfig


class LoraConfig(Section):
    """Low-rank adapters (through PEFT)."""

    r: PositiveInt = 16
    """Adapter rank."""
    alpha: PositiveFloat = 32.0
    """Scaling numerator: the update is scaled by alpha / r (alpha / sqrt(r) with rslora)."""
    dropout: Fraction = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] = []
    """Module names to adapt; empty means every linear layer except the output head."""
    use_dora: bool = False
    """Weight-decomposed adapters (DoRA)."""
    use_rslora: bool = False
    """Rank-stabilized scaling, alpha / sqrt(r)."""
    layers: PositiveInt | None = None
    """Adapt only the last N transformer layers; empty means all. The backward pass then stops at the lowest
    adapted layer: with the top half adapted a step costs about a third less."""


class LoopConfig(Section):
    """The training loop's settings, shared by supervised tuning (`train`) and preference tuning (`dpo`)."""

    section: ClassVar[str] = "train"  # its key in adhere.yaml, for messages
    lr: PositiveFloat = 2e-4
    """Peak learning rate."""
    epochs: PositiveFloat = 3.0
    """Passes over the training data (ignored when max_steps is set)."""
    max_steps: PositiveInt | None = None
    """Stop after this many optimizer steps."""
    batch_size: PositiveInt = 8
    """Examples per micro-step (one forward and backward)."""
    grad_accum: PositiveInt = 1
    """Micro-steps per optimizer step."""
    max_length: PositiveInt = 1024
    """Tokens per example; longer examples are truncated."""
    warmup_ratio: Fraction = 0.03
    """Share of the steps spent warming up the learning rate."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate schedule after warmup."""
    weight_decay: NonNegativeFloat = 0.0
    """AdamW weight decay."""
    max_grad_norm: PositiveFloat = 1.0
    """Gradient clipping threshold."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory for long examples, about a third more time."""
    precision: Literal["auto", "bf16", "fp32", "pure_bf16"] = "auto"
    """Compute precision: 'auto' uses bf16 autocast where the CPU or GPU supports it, fp32 otherwise. The trained
    weights stay float32 (master weights; small updates would round away in bf16) whatever model.dtype loads;
    'pure_bf16' trains bf16 weights directly, for less memory and less exact updates."""
    seed: int = 0
    """Seed for initialisation, shuffling and dropout."""
    eval_every: PositiveInt | None = None
    """Measure the loss on the validation split (data/valid.jsonl, carved from the training rows) every this many
    steps and at the end; the best weights so far are the ones written. The eval split stays for `adhere eval`."""
    log_every: PositiveInt = 1
    """Write a metrics.jsonl line every this many steps."""
    tensorboard: bool = False
    """Also log loss, eval loss, learning rate and throughput for TensorBoard in run_dir/tensorboard/
    (needs `pip install tensorboard`)."""
    save_every: PositiveInt | None = None
    """Write a checkpoint every this many steps, for `adhere train --resume`."""
    keep_last: PositiveInt = 2
    """Checkpoints kept (the one with the best validation loss is kept too)."""
    early_stopping_patience: PositiveInt | None = None
    """Stop after this many evaluations without a better validation loss; the best weights are the ones written."""

    @model_validator(mode="after")
    def _patience_needs_evaluations(self) -> LoopConfig:
        if self.early_stopping_patience is not None and self.eval_every is None:
            raise error_at(("early_stopping_patience",), f"early stopping needs evaluations: set {self.section}.eval_every too")
        return self


class MethodConfig(Section):
    """What is trained: adapters or every weight. Its own base so that `train` lists these keys first."""

    method: Literal["lora", "full"] = "lora"
    """'lora' trains adapters; 'full' trains every weight (dpo follows it too)."""
    lora: LoraConfig = LoraConfig()


class TrainConfig(LoopConfig, MethodConfig):  # pydantic orders fields from the last base: method, lora, lr, ...
    """Supervised instruction tuning, loss on assistant tokens only."""

    @model_validator(mode="after")
    def _lora_only_with_lora(self) -> TrainConfig:
        if self.method == "full" and "lora" in self.model_fields_set:
            raise error_at(("lora",), "train.lora is set but train.method is 'full'; remove train.lora or set train.method: lora")
        return self


class DpoConfig(LoopConfig):
    """Preference tuning (DPO) on workdir/data/pairs.jsonl and workdir/self_pairs/pairs.jsonl, after `train`; LoRA or
    full as train.method says.

    It starts from the supervised weights in workdir/train/ when they exist (LoRA continues that
    adapter), else from model.base, and that starting model is the reference.
    """

    section: ClassVar[str] = "dpo"

    beta: PositiveFloat = 0.1
    """How far the tuned model may move from the reference: the DPO loss is -log sigmoid(beta * (chosen log-ratio -
    rejected log-ratio)). 0.1 is the DPO paper's and TRL's default; larger keeps it closer to the reference."""
    sft_weight: NonNegativeFloat = 1.0
    """Weight of a supervised term on the chosen answers (their loss per chosen token) beside the DPO loss; 0 is plain
    DPO. 1.0 as in RPO (Pang et al. 2024): issue 16 measured plain DPO moving a model from one fixed answer to
    another, and the term keeps the chosen answers likely and their format intact."""
    lr: PositiveFloat = 5e-6
    """Peak learning rate; DPO wants far less than SFT (alignment-handbook's QLoRA DPO recipe uses 5e-6)."""
    epochs: PositiveFloat = 1.0
    """Passes over the pairs (ignored when max_steps is set)."""
    batch_size: PositiveInt = 4
    """Pairs per micro-step (one forward of 2 x batch_size sequences, chosen and rejected, and a backward)."""
    eval_every: PositiveInt | None = None
    """Measure the DPO loss and reward accuracy on workdir/data/pairs_valid.jsonl every this many steps and at the
    end; the best weights (by that loss) are the ones written."""
    save_every: PositiveInt | None = None
    """Write a checkpoint every this many steps, for `adhere dpo --resume`."""
    self_pairs: SelfPairsConfig | None = None
    """Pairs from the model's own graded answers (`adhere self-pairs`, run before dpo), trained beside
    workdir/data/pairs.jsonl; absent means none."""
