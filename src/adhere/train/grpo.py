"""Step 4c, reinforce: GRPO scored by the spec's checks and the eval's graders, in the loop SFT and DPO use.

    adhere grpo adhere.yaml        # after `adhere train` (and `adhere dpo` when there is a dpo section)

Each micro-step takes `grpo.batch_size` prompts of workdir/data/train.jsonl (each row's turns up to its
last user turn; the assistant turn after it is the reference answer the graders compare with) and
samples `grpo.group_size` answers to each from the model as it is at that step: LocalBackend over the
live weights (LoRA: a copy with the adapters merged in, refreshed each step, `weights.MergedCopy`), in eval
mode, float32 on the CPU, each prompt read once for its group, each answer from its own generator seeded by
(grpo.seed, step, sample, prompt), so a resumed run samples what the uninterrupted run sampled. Every
answer is scored by `grpo.rewards` (adhere.train.rewards: JSON, schema, the spec's constraints, IFEval
checkers, item F1, ROUGE-L, exact match, a length penalty, a user function), and the weighted sum r
becomes an advantage within its group: A = (r - mean) / (std + 1e-4), std unbiased, as TRL's
GRPOTrainer; `grpo.scale_rewards: false` keeps A = r - mean (Dr. GRPO, Liu et al. 2025, which finds the
division favours groups that barely differ). A group whose answers all score the same has A = 0 and
gives no gradient; its share is logged as zero_std_groups.

The variant is TRL's default (loss_type 'dapo', num_iterations 1): GRPO's clipped surrogate
-min(ratio A, clip(ratio, 0.8, 1.2) A) on every sampled token, summed over the step's accumulated batch
and divided by the number of sampled tokens in it (DAPO, Yu et al. 2025: each token counts the same,
so long answers are not diluted and short ones not inflated; the SFT loss is normalised the same way),
plus `grpo.beta` times the k3 estimate of the KL divergence to the starting weights (off by default,
as in current practice). One update per sampled batch: the old policy is the current one, so the ratio
is exactly 1 and the gradient is A times the gradient of each token's log-probability; the clip comes
into play when sampling and training differ (several updates per batch, a separate inference engine).

Logged per step (metrics.jsonl, TensorBoard): the loss, the mean reward and each reward's mean
(reward_<name>), zero_std_groups, completion_tokens (mean answer length), truncated (answers cut at
max_new_tokens), clip_fraction, kl when beta > 0; every `grpo.sample_every` steps the best and worst
answer of the step's first group go to samples.jsonl. Writes workdir/grpo/ as `train` writes workdir/train/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from adhere.errors import UserError
from adhere.generation.backend import GenerationParams
from adhere.generation.local import LocalBackend, prompt_ids
from adhere.generation.sampling import row_seed
from adhere.generation.weights import MergedCopy, find_tuned_weights, weights_folder
from adhere.models.masking import IGNORE_INDEX
from adhere.train.batches import Example, collate, read_records
from adhere.train.checkpoints import RESUME_KEYS as SFT_RESUME_KEYS
from adhere.train.checkpoints import trainable_state
from adhere.train.loop import Log, Task, Terms, TokenLoss, run_loop
from adhere.train.model import build_model
from adhere.train.rewards import GrpoPrompt, Rewards, Rollout, build

REFERENCE_FILE = "reference_weights.safetensors"
SAMPLES_FILE = "samples.jsonl"
CLIP_EPSILON = 0.2  # PPO's and TRL's epsilon
STD_EPSILON = 1e-4  # TRL's: A = (r - mean) / (std + 1e-4)
# Resuming under other values of these would not end where an uninterrupted run ends (see checkpoints.RESUME_KEYS).
RESUME_KEYS = {"model": SFT_RESUME_KEYS["model"], "train": ("method", "lora"),
               "grpo": tuple(k for k in SFT_RESUME_KEYS["train"] if k not in ("method", "lora"))
               + ("group_size", "max_new_tokens", "temperature", "top_p", "scale_rewards", "beta", "rewards", "max_prompts")}


def start_stage(config: Any) -> str:
    """The stage whose weights GRPO starts from: dpo when adhere.yaml has a dpo section, else train."""
    return "dpo" if config.dpo is not None else "train"


def prompts_path(config: Any) -> Path:
    return config.stage_dir("data") / "train.jsonl"


def read_prompts(path: Path, tokenizer: Any, settings: Any) -> list[GrpoPrompt]:
    """The prompts of `path` (its first grpo.max_prompts rows; 0 means all), rendered with the generation prompt."""
    if not path.is_file():
        raise UserError(f"grpo: no prompts in {path}; run `adhere data` first")
    records = read_records(path)
    records = records[: settings.max_prompts] if settings.max_prompts else records
    prompts, too_long = [], []
    for line, record in enumerate(records, start=1):
        messages = record["messages"]
        users = [k for k, m in enumerate(messages) if m["role"] == "user"]
        if not users:
            raise UserError(f"{path}:{line}: no user turn to answer; GRPO samples answers to each row's last user turn")
        last = users[-1]
        after = messages[last + 1 : last + 2]
        reference = after[0]["content"] if after and after[0]["role"] == "assistant" else None
        meta = record.get("meta") or {}
        ids = prompt_ids(tokenizer, messages[: last + 1], f"{path}:{line}: the chat template")
        if len(ids) + settings.max_new_tokens > settings.max_length:
            too_long.append(line)
        prompts.append(GrpoPrompt(str(meta.get("id") or f"{path.name}:{line}"), messages[: last + 1], reference, meta, ids))
    if too_long:
        raise UserError(f"{path}: {len(too_long)} prompts (lines {', '.join(map(str, too_long[:5]))}"
                        f"{' ...' if len(too_long) > 5 else ''}) leave no room for grpo.max_new_tokens "
                        f"({settings.max_new_tokens}) within grpo.max_length ({settings.max_length}); raise max_length "
                        "or lower max_new_tokens")
    if not prompts:
        raise UserError(f"grpo: {path} is empty; run `adhere data` first")
    return prompts


def advantages(rewards: torch.Tensor, group_size: int, scale: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(each answer's advantage within its group, whether its group's rewards are all the same), for rewards
    listed group by group. Scaled: (r - mean) / (std + 1e-4), std unbiased; else r - mean."""
    groups = rewards.view(-1, group_size)
    mean, std = groups.mean(dim=1, keepdim=True), groups.std(dim=1, keepdim=True)
    centred = groups - mean
    out = centred / (std + STD_EPSILON) if scale else centred
    same = torch.isclose(std, torch.zeros_like(std)).expand_as(groups)
    return out.reshape(-1), same.reshape(-1)


def clipped_objective(logps: torch.Tensor, old_logps: torch.Tensor, advantage: torch.Tensor,
                      epsilon: float = CLIP_EPSILON) -> tuple[torch.Tensor, torch.Tensor]:
    """(per token: min(ratio A, clip(ratio, 1 - eps, 1 + eps) A), whether the clip bound it), ratio = pi / pi_old."""
    ratio = torch.exp(logps - old_logps)
    objective = torch.minimum(ratio * advantage, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * advantage)
    clipped = ((ratio < 1 - epsilon) & (advantage < 0)) | ((ratio > 1 + epsilon) & (advantage > 0))
    return objective, clipped


def k3_kl(logps: torch.Tensor, reference_logps: torch.Tensor) -> torch.Tensor:
    """Per token, the k3 estimate of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1, never negative."""
    delta = reference_logps - logps
    return torch.exp(delta) - delta - 1


def terms(beta: float, labels: tuple[str, ...]) -> Terms:
    """The loss terms (per sampled token) and what is logged beside them (means per answer; clip_fraction per token)."""
    logged = ("reward", *(f"reward_{label}" for label in labels), "zero_std_groups", "completion_tokens", "truncated")
    return {"pg_loss": ("tokens", 1.0), **({"kl": ("tokens", beta)} if beta else {}), "clip_fraction": ("tokens", 0.0),
            **{name: ("answers", 0.0) for name in logged}}


def count(batch: dict[str, Any]) -> dict[str, int]:
    """Sampled tokens and answers of a batch (a blank prompt's row has neither)."""
    trained = batch["targets"] != IGNORE_INDEX
    return {"tokens": int(trained.sum()), "answers": int(trained.any(1).sum())}


class GrpoLoss(TokenLoss):
    """GRPO's sums over a batch of sampled answers, from the model's own forward (TokenLoss: trained positions only)."""

    def __init__(self, inner: Any, beta: float, labels: tuple[str, ...], reference: dict[str, torch.Tensor] | None) -> None:
        super().__init__(inner)
        self.beta, self.labels, self.reference = beta, labels, reference

    def forward(self, input_ids: Any, attention_mask: Any, targets: Any, advantages: Any, rewards: Any, total: Any,
                same: Any, truncated: Any, lengths: Any) -> dict[str, Any]:
        nll, keep = self.token_nll(input_ids, attention_mask, targets)
        logps, rows = -nll, keep.nonzero()[:, 0]  # row-major, the order of targets[keep]
        objective, clipped = clipped_objective(logps, logps.detach(), advantages[rows])
        sums = {"pg_loss": -objective.sum(), "clip_fraction": clipped.sum().float()}
        if self.beta:
            with torch.no_grad(), swapped(self.inner, self.reference or {}):
                reference = -self.token_nll(input_ids, attention_mask, targets)[0]
            sums["kl"] = k3_kl(logps, reference).sum()
        real = keep.any(1).float()  # a blank prompt's row counts for nothing
        logged = {"reward": total, **{f"reward_{label}": rewards[:, i] for i, label in enumerate(self.labels)},
                  "zero_std_groups": same, "completion_tokens": lengths, "truncated": truncated}
        return sums | {name: (value.float() * real).sum() for name, value in logged.items()}


@contextmanager
def swapped(model: Any, weights: dict[str, torch.Tensor]) -> Iterator[None]:
    """`model` with its trained parameters' data pointing at `weights` (the starting ones), then back."""
    params = dict(model.named_parameters())
    kept = {name: params[name].data for name in weights}
    try:
        for name, value in weights.items():
            params[name].data = value.to(kept[name].device)
        yield
    finally:
        for name, value in kept.items():
            params[name].data = value


class Rollouts:
    """The GRPO task's collate: a micro-batch of prompts -> sampled answers, scored, as training rows.

    The loop calls `begin_step` before it collates a step's micro-batches, so every answer's seed is
    (grpo.seed, step, sample k, prompt): the same on a resumed run, independent of batching.
    """

    def __init__(self, model: Any, tokenizer: Any, settings: Any, rewards: Rewards, run_dir: Path, main: bool) -> None:
        self.model, self.settings, self.rewards, self.run_dir, self.main = model, settings, rewards, run_dir, main
        self.merged = MergedCopy(model) if settings.sample_merged and MergedCopy.usable(model) else None
        self.backend = LocalBackend(self.merged.model if self.merged else model, tokenizer, name="grpo policy",
                                    weights_id="live training weights", batch_size=settings.batch_size * settings.group_size)
        self.pad_id, self.step, self.micro = self.backend.pad_id, 1, 0

    def begin_step(self, step: int) -> None:
        if self.main and self.step == 1 and step > 1:  # resumed: the interrupted run's lines from this step on go
            path = self.run_dir / SAMPLES_FILE
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] < step] if path.is_file() else []
            path.write_text("".join(line + "\n" for line in kept))
        self.step, self.micro = step, 0

    def __call__(self, prompts: list[GrpoPrompt]) -> dict[str, Any]:
        s, g = self.settings, self.settings.group_size
        real = [p for p in prompts if not p.blank]
        rows = [p.input_ids for p in real for _ in range(g)]
        seeds = [row_seed(s.seed, [self.step, k, *p.input_ids]) for p in real for k in range(g)]
        params = GenerationParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed)
        was_training = self.model.training
        self.model.eval()
        if self.merged is not None:
            self.merged.refresh()
        try:  # each prompt is read once for its whole group (repeats)
            new = self.backend.generate_ids([p.input_ids for p in real], params, seeds=seeds, repeats=g) if rows else []
        finally:
            self.model.train(was_training)
        answers = [self.backend.finish(prompt, tokens) for prompt, tokens in zip(rows, new)]
        rollouts = [Rollout(p, a.text, a.completion_tokens, a.finish_reason) for p, a in zip((p for p in real for _ in range(g)), answers)]
        scores = torch.tensor(self.rewards.score(rollouts), dtype=torch.float32).reshape(len(rollouts), len(self.rewards.labels))
        total = scores @ torch.tensor(self.rewards.weights, dtype=torch.float32)
        advantage, same = advantages(total, g, s.scale_rewards) if rollouts else (total, total.bool())
        if self.main and self.micro == 0 and rollouts and (self.step == 1 or self.step % s.sample_every == 0):
            self._write_samples(rollouts[:g], scores[:g], total[:g])
        self.micro += 1
        examples = [Example(p + t, [IGNORE_INDEX] * len(p) + t) for p, t in zip(rows, new)]
        blanks = [p for p in prompts if p.blank]
        examples += [Example(p.input_ids, [IGNORE_INDEX] * len(p.input_ids)) for p in blanks]
        pad = len(blanks)
        return collate(examples, self.pad_id) | {
            "advantages": torch.cat([advantage, torch.zeros(pad)]),
            "rewards": torch.cat([scores, torch.zeros(pad, scores.shape[1])]),
            "total": torch.cat([total, torch.zeros(pad)]),
            "same": torch.cat([same.float(), torch.zeros(pad)]),
            "truncated": torch.tensor([a.finish_reason == "length" for a in answers] + [False] * pad, dtype=torch.float32),
            "lengths": torch.tensor([a.completion_tokens for a in answers] + [0] * pad, dtype=torch.float32),
        }

    def _write_samples(self, group: list[Rollout], scores: torch.Tensor, total: torch.Tensor) -> None:
        """The best and worst answer of one group, with every reward, to samples.jsonl."""
        def shown(i: int) -> dict[str, Any]:
            return {"reward": round(float(total[i]), 4), "rewards": dict(zip(self.rewards.labels, (round(float(v), 4) for v in scores[i]))),
                    "completion_tokens": group[i].completion_tokens, "text": group[i].text}

        best, worst = int(total.argmax()), int(total.argmin())
        line = {"step": self.step, "prompt_id": group[0].prompt.id, "prompt": group[0].prompt.messages[-1]["content"],
                "reference": group[0].prompt.reference, "best": shown(best), "worst": shown(worst)}
        with (self.run_dir / SAMPLES_FILE).open("a") as handle:
            handle.write(json.dumps(line) + "\n")


def blank_prompt(prompt: GrpoPrompt) -> GrpoPrompt:
    return GrpoPrompt(prompt.id, prompt.messages, prompt.reference, prompt.meta, prompt.input_ids, blank=True)


def reference_weights(model: Any, run_dir: Path, main: bool) -> dict[str, torch.Tensor]:
    """The trained parameters as training starts, for the KL term: saved in run_dir for a resumed run, read back there."""
    from safetensors.torch import load_file, save_file

    path = run_dir / REFERENCE_FILE
    if path.is_file():
        return load_file(path)
    state = trainable_state(model)
    if main:
        save_file(state, path)
    return state


def grpo_task(config: Any, accelerator: Any, run_dir: Path, log: Log = lambda m: None) -> Task:
    """GRPO from the tuned weights so far (workdir/dpo/ or workdir/train/, else model.base); the loop's Task."""
    gc = config.grpo
    rewards = build(config)  # a user function that does not import fails before the model loads
    start = find_tuned_weights(config, start_stage(config))
    model, tokenizer = build_model(config.model, config.train, accelerator.device.type, loop=gc, start=start)
    path = prompts_path(config)
    prompts = read_prompts(path, tokenizer, gc)
    rewards.check_prompts(prompts, str(path))
    reference = reference_weights(model, run_dir, accelerator.is_main_process) if gc.beta else None
    rollouts = Rollouts(model, tokenizer, gc, rewards, run_dir, accelerator.is_main_process)
    return Task(gc, model, tokenizer, GrpoLoss(model, gc.beta, rewards.labels, reference), terms(gc.beta, rewards.labels),
                prompts, [], collate=rollouts, count=count, blank=blank_prompt, data_files=[path],
                out=weights_folder(run_dir, config.train.method), begin_step=rollouts.begin_step)


def train(config: Any, run_dir: Path, log: Log = lambda m: None, resume: Path | None = None) -> dict[str, Any]:
    """Reinforce as adhere.yaml's grpo section says (`grpo_task`); see `loop.run_loop`. The summary adds the
    mean reward at step 1 and over the last tenth of the steps (at least 1), from metrics.jsonl."""
    summary = run_loop(config, config.grpo, grpo_task, run_dir, log, resume)
    rewards = [json.loads(line)["reward"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max(1, len(rewards) // 10)
    return summary | {"final_rewards": {"first": rewards[0], "last": sum(rewards[-last:]) / last, "last_steps": last}}
