"""The `train`, `dpo` and `grpo` sections of adhere.yaml: how to tune (step 4), to prefer (4b) and to reinforce (4c).

All run the one training loop, so they share its settings (`LoopConfig`); `train` adds the method
and LoRA's shape, which DPO and GRPO follow, `dpo` what preference tuning needs, `grpo` sampling and rewards.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import field_validator, model_validator

from adhere.config_fields import Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Section, error_at
from adhere.self_pairs.config import SelfPairsConfig
from adhere.train.rewards import RewardConfig


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


class GrpoConfig(LoopConfig):
    """Reinforcement tuning (GRPO) with verifiable rewards, after `train` (and `dpo`); LoRA or full as train.method
    says. Samples group_size answers to each prompt of workdir/data/train.jsonl from the model as it trains,
    scores them with `rewards` (the spec's checks, the eval's graders, a length penalty, a user function)
    and moves the model toward the answers that score above their group's mean (adhere.train.grpo).

    It starts from the weights of the stage before it (workdir/dpo/ with a dpo section, else workdir/train/,
    else model.base); LoRA continues that adapter.
    """

    section: ClassVar[str] = "grpo"

    rewards: list[RewardConfig] = []
    """What scores an answer, each with a weight: e.g. [{name: item_f1, item: suggestion}, {name: schema, weight: 0.5}].
    Names: json, schema, constraints, ifeval, item_f1, rouge_l, exact_match, length, function (adhere.train.rewards)."""
    group_size: PositiveInt = 4
    """Answers sampled per prompt (GRPO's G, at least 2): advantages compare each answer with its group's."""
    batch_size: PositiveInt = 2
    """Prompts per micro-step; each gives group_size answers, sampled together and trained in one forward."""
    max_new_tokens: PositiveInt = 256
    """Longest sampled answer; a cut-off answer stays in its group (it scores what it scores)."""
    temperature: PositiveFloat = 1.0
    """Sampling temperature: 1.0 samples the model's own distribution, as the policy gradient assumes."""
    top_p: Fraction = 1.0
    """Nucleus sampling mass (1.0: none, as the policy gradient assumes)."""
    scale_rewards: bool = True
    """Divide each group's centred rewards by their standard deviation (GRPO, TRL's default); false keeps the
    centred rewards (Dr. GRPO)."""
    beta: NonNegativeFloat = 0.0
    """Weight of a KL penalty to the starting weights (k3 estimate, per token); 0, the default as in TRL and
    DAPO, turns it off and skips the reference forward."""
    lr: PositiveFloat = 1e-5
    """Peak learning rate."""
    epochs: PositiveFloat = 1.0
    """Passes over the prompts (ignored when max_steps is set)."""
    warmup_ratio: Fraction = 0.0
    """Share of the steps spent warming up the learning rate."""
    max_prompts: NonNegativeInt = 0
    """Use at most this many prompts (the first rows of workdir/data/train.jsonl); 0 means all."""
    sample_merged: bool = True
    """LoRA: sample from a copy of the model with the adapters merged in, refreshed each step (decoding about 13%
    faster on the embedded model on 2 CPU cores), at the cost of a second copy of the weights in memory; false
    samples through the adapters."""
    sample_every: PositiveInt = 10
    """Write the best and worst answer of a group to run_dir/samples.jsonl at step 1 and every this many steps."""
    save_every: PositiveInt | None = None
    """Write a checkpoint every this many steps, for `adhere grpo --resume`."""

    @field_validator("group_size")
    @classmethod
    def _a_group(cls, value: int) -> int:
        if value < 2:
            raise ValueError("expected at least 2: advantages compare each answer with the others of its group")
        return value

    @model_validator(mode="after")
    def _rewards_and_no_evaluations(self) -> GrpoConfig:
        if not self.rewards:
            raise error_at(("rewards",), "is empty: name at least one reward, e.g. [{name: schema}] or "
                           "[{name: item_f1, item: suggestion}]")
        labels = [r.label for r in self.rewards]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                raise error_at(("rewards", i), f"reward {label!r} is listed twice; give it once with the weight the two add to")
        if self.eval_every is not None:
            raise error_at(("eval_every",), "grpo does not evaluate during training; compare the models with "
                           "`adhere eval` after it (eval.models lists base, sft and tuned)")
        return self
