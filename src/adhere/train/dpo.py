"""Step 4b, prefer: DPO on preference pairs, in the training loop SFT uses (`loop.run_loop`).

    adhere dpo adhere.yaml        # after `adhere train`; adhere.yaml has a dpo section

Reads workdir/data/pairs.jsonl (and pairs_valid.jsonl), and with dpo.self_pairs workdir/self_pairs/pairs.jsonl
(and pairs_valid.jsonl; `adhere self-pairs`), pair records as the data stage writes them:
`{"messages": [prompt turns, the last from the user], "chosen": {assistant turn}, "rejected": {...}}`.
Each side is rendered as an ordinary chat record (prompt + that answer) by `models.masking.render`,
the one loss mask, with the prompt's own assistant turns untrained, so only the answer's tokens
count; both sides must share the prompt's tokens exactly.

The loss is DPO's (Rafailov et al. 2023), with sequence log-probabilities summed over each answer's
trained tokens: -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), plus `sft_weight` times the
chosen answers' loss per token. The reference is the model training starts from (the SFT adapter
or model in workdir/train/, else model.base; a new LoRA adapter has its adapter disabled), whose
log-probabilities are computed once before the first step and kept in run_dir/reference_logps.safetensors,
so a resumed run reads them rather than needing the starting weights again. Writes workdir/dpo/ as
`train` writes workdir/train/.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from adhere.errors import UserError
from adhere.generation.weights import find_tuned_weights, weights_folder
from adhere.models.masking import IGNORE_INDEX, render
from adhere.train.batches import Example, collate, epoch_batches, read_records
from adhere.train.checkpoints import RESUME_KEYS as SFT_RESUME_KEYS
from adhere.train.loop import Log, Task, Terms, TokenLoss, run_loop
from adhere.train.model import build_model

REFERENCE_FILE = "reference_logps.safetensors"
# Resuming under other values of these would not end where an uninterrupted run ends (see checkpoints.RESUME_KEYS).
RESUME_KEYS = {"model": SFT_RESUME_KEYS["model"], "train": ("method", "lora"),
               "dpo": tuple(k for k in SFT_RESUME_KEYS["train"] if k not in ("method", "lora")) + ("beta", "sft_weight")}


def pair_paths(config: Any) -> dict[str, Path]:
    """Every pair file DPO reads, by name: 'pairs' and, when it exists, 'pairs_valid' (the data stage's,
    `data.stage.pair_files`, or workdir/data/pairs.jsonl written by `adhere feedback export --pairs` without
    data.pairs); with dpo.self_pairs, 'self_pairs' and 'self_pairs_valid' (workdir/self_pairs/). Names ending
    in '_valid' are held out for reward accuracy, the others train."""
    from adhere.data.stage import pair_files

    found, folder = pair_files(config), config.stage_dir("data")
    if "pairs" not in found and (folder / "pairs.jsonl").is_file():
        found = {"pairs": folder / "pairs.jsonl"} | ({"pairs_valid": folder / "pairs_valid.jsonl"}
                                                      if (folder / "pairs_valid.jsonl").is_file() else {})
    if config.dpo is not None and config.dpo.self_pairs is not None:
        own = config.stage_dir("self_pairs")
        if not (own / "pairs.jsonl").is_file():
            raise UserError(f"dpo.self_pairs is set but {own / 'pairs.jsonl'} does not exist; run "
                            f"`adhere self-pairs {config.name}` first (`adhere run` does)")
        found |= {"self_pairs": own / "pairs.jsonl"} | ({"self_pairs_valid": own / "pairs_valid.jsonl"}
                                                        if (own / "pairs_valid.jsonl").is_file() else {})
    if not found:
        raise UserError(f"dpo: no preference pairs in {folder / 'pairs.jsonl'}; list pair files under data.pairs "
                        "and run `adhere data`, or add dpo.self_pairs, or remove the dpo section")
    return found


@dataclass(frozen=True)
class Pair:
    """One preference pair, rendered: the chosen and rejected sides, and the reference's log-probabilities of each."""

    chosen: Example
    rejected: Example
    reference: tuple[float, float] = (0.0, 0.0)

    @property
    def input_ids(self) -> list[int]:
        """The longer side's tokens: what batches.epoch_batches groups pairs by length with."""
        return max(self.chosen.input_ids, self.rejected.input_ids, key=len)


def render_pair(record: dict[str, Any], tokenizer: Any, max_length: int, where: str) -> Pair | None:
    """Both sides of a pair record as rendered examples, or None when truncation leaves a side nothing to train.

    The prompt's own assistant turns (multi-turn prompts) are context: weight 0. The two renderings must
    agree token for token up to the answer, or the log-ratios would compare answers to different prompts.
    """
    for side in ("chosen", "rejected"):
        turn = record.get(side)
        if not isinstance(turn, dict) or turn.get("role") != "assistant" or not isinstance(turn.get("content"), str):
            raise UserError(f"{where}: '{side}' must be an assistant turn {{\"role\": \"assistant\", \"content\": ...}}; "
                            "check `adhere data` output")
    prompt = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in record.get("messages") or []]
    if not prompt or prompt[-1].get("role") != "user":
        raise UserError(f"{where}: 'messages' must be the prompt's turns, the last from the user")
    sides = [render(tokenizer, prompt + [record[side]], max_length=max_length) for side in ("chosen", "rejected")]
    if not all(side.trained_tokens for side in sides):
        return None
    starts = [next(i for i, label in enumerate(side.labels) if label != IGNORE_INDEX) for side in sides]
    if starts[0] != starts[1] or sides[0].input_ids[: starts[0]] != sides[1].input_ids[: starts[1]]:
        raise UserError(f"{where}: the chosen and rejected sides render different prompt tokens with this chat "
                        "template; each side must be the same prompt followed by one answer")
    return Pair(*(Example(side.input_ids, side.labels) for side in sides))


def build_pairs(path: Path, tokenizer: Any, max_length: int) -> list[Pair]:
    """Every pair of `path` rendered; pairs truncated to nothing are skipped, but none left is an error."""
    records = read_records(path)
    pairs = [render_pair(r, tokenizer, max_length, f"{path}:{n}") for n, r in enumerate(records, start=1)]
    kept = [p for p in pairs if p is not None]
    if not kept:
        detail = "it is empty" if not records else (f"none of its {len(records)} pairs has an answer to train within "
                                                    f"dpo.max_length ({max_length} tokens)")
        raise UserError(f"{path}: {detail}; check `adhere data` output (stats.json, rejected.jsonl) or raise dpo.max_length")
    return kept


def collate_pairs(pairs: list[Pair], pad_id: int) -> dict[str, Any]:
    """One batch of 2 x len(pairs) rows, the chosen sides then the rejected ones, and the reference log-probs [pairs, 2]."""
    batch = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    return batch | {"reference": torch.tensor([p.reference for p in pairs], dtype=torch.float32)}


def count_pairs(batch: dict[str, Any]) -> dict[str, int]:
    """Pairs (those with a trained token), chosen answers' trained tokens, and all trained tokens of a batch."""
    trained = batch["targets"] != IGNORE_INDEX
    chosen = trained[: len(batch["reference"])]
    return {"pairs": int(chosen.any(1).sum()), "chosen_tokens": int(chosen.sum()), "tokens": int(trained.sum())}


def blank_pair(pair: Pair) -> Pair:
    """A pair that trains nothing (a process's share of a short last batch)."""
    return Pair(*(Example(e.input_ids, [IGNORE_INDEX] * len(e.labels)) for e in (pair.chosen, pair.rejected)))


def terms(sft_weight: float) -> Terms:
    """The loss terms and what is logged beside them: means per pair, and the SFT term per chosen token."""
    logged = ("reward_accuracy", "margin", "chosen_logp", "rejected_logp", "chosen_reward", "rejected_reward")
    return {"dpo_loss": ("pairs", 1.0), "sft_loss": ("chosen_tokens", sft_weight), **{k: ("pairs", 0.0) for k in logged}}


class DpoLoss(TokenLoss):
    """DPO's sums over a batch of pairs, from the model's own forward (TokenLoss: logits at trained positions only)."""

    def __init__(self, inner: Any, beta: float) -> None:
        super().__init__(inner)
        self.beta = beta

    def forward(self, input_ids: Any, attention_mask: Any, targets: Any, reference: Any) -> dict[str, Any]:
        logps, nll, rows = self.sequence_logps(input_ids, attention_mask, targets)
        n = len(reference)
        real = (targets[:n] != IGNORE_INDEX).any(1)  # a blank pair counts for nothing
        chosen_reward = self.beta * (logps[:n] - reference[:, 0])
        rejected_reward = self.beta * (logps[n:] - reference[:, 1])
        margin = chosen_reward - rejected_reward
        stats = {"reward_accuracy": (margin > 0).float(), "margin": margin, "chosen_logp": logps[:n],
                 "rejected_logp": logps[n:], "chosen_reward": chosen_reward, "rejected_reward": rejected_reward}
        # Sums: the loop divides dpo_loss and the logged means by the pairs of the accumulated batch, and
        # sft_loss (the chosen answers' summed token losses) by their trained tokens.
        return {"dpo_loss": (-torch.nn.functional.logsigmoid(margin) * real).sum(), "sft_loss": nll[rows < n].sum(),
                **{k: (v.detach() * real).sum() for k, v in stats.items()}}

    def sequence_logps(self, input_ids: Any, attention_mask: Any, targets: Any) -> tuple[Any, Any, Any]:
        """(each row's log-probability summed over its trained tokens, each trained token's loss, its row)."""
        nll, keep = self.token_nll(input_ids, attention_mask, targets)
        rows = keep.nonzero()[:, 0]  # row-major, the order of targets[keep]
        return torch.zeros(len(input_ids), device=nll.device).index_add(0, rows, -nll), nll, rows


def reference_logps(model: Any, pairs: list[Pair], batch_size: int, pad_id: int, accelerator: Any,
                    disable_adapter: bool, progress: Callable[[int], None] = lambda done: None,
                    groups: list[list[int]] | None = None) -> torch.Tensor:
    """[pairs, 2]: the log-probability of each chosen and rejected answer under `model` as it is now (eval mode,
    the training precision); with `disable_adapter`, under its base model (PEFT's `disable_adapter()`).

    Batched as `groups` says (lists of pair indices; default: `batch_size` pairs at a time in order). Under
    bf16 autocast a sequence's log-probability depends on the batch it is padded into (measured on the
    embedded model: up to 0.27 nats on one answer), so the caller groups pairs as the loop will.
    """
    scorer, out = DpoLoss(model, beta=1.0).to(accelerator.device), torch.zeros((len(pairs), 2))
    groups = groups if groups is not None else [list(range(s, min(s + batch_size, len(pairs)))) for s in range(0, len(pairs), batch_size)]
    was_training = model.training
    model.eval()
    with torch.no_grad(), accelerator.autocast(), model.disable_adapter() if disable_adapter else nullcontext():
        for group in groups:
            batch = {k: v.to(accelerator.device) for k, v in collate_pairs([pairs[i] for i in group], pad_id).items()}
            logps = scorer.sequence_logps(batch["input_ids"], batch["attention_mask"], batch["targets"])[0].float().cpu()
            out[group] = torch.stack(logps.chunk(2), dim=1)
            progress(len(group))
    model.train(was_training)
    return out


def first_epoch_groups(pairs: list[Pair], batch_size: int, seed: int, world: int) -> list[list[int]]:
    """The pairs as the loop's first epoch batches them (`loop.micro_batches`: each process's share of each
    global batch), so at step 0 a reference equal to the starting weights gives exactly ln 2."""
    return [share for indices in epoch_batches(pairs, batch_size * world, seed, 0)
            for share in (indices[rank::world] for rank in range(world)) if share]


def with_reference(train: list[Pair], valid: list[Pair], model: Any, settings: Any, pad_id: int, accelerator: Any,
                   run_dir: Path, disable_adapter: bool, log: Log = lambda m: None) -> tuple[list[Pair], list[Pair]]:
    """The train and held-out pairs with their reference log-probabilities: read from run_dir (a resumed run),
    else computed once, the train pairs in the loop's first-epoch batches, and saved.

    Kept on disk because after a step the starting weights are gone from memory (a continued adapter has
    moved); a fresh run deletes the file first (train.stage.run), a resume checks the pair files did not change.
    """
    from safetensors.torch import load_file, save_file

    path = run_dir / REFERENCE_FILE
    if path.is_file():
        saved = load_file(path)
    else:  # 200 pairs of ~500 tokens take ~2 minutes on 2 CPU cores: the progress view shows them
        total, done = len(train) + len(valid), [0]

        def progress(scored: int) -> None:
            done[0] += scored
            log({"phase": "reference", "done": done[0], "total": total})

        groups = first_epoch_groups(train, settings.batch_size, settings.seed, accelerator.num_processes)
        saved = {"train": reference_logps(model, train, settings.batch_size, pad_id, accelerator, disable_adapter,
                                          progress, groups),
                 # held out: in order, as loop.evaluate batches them
                 "valid": reference_logps(model, valid, settings.batch_size, pad_id, accelerator, disable_adapter, progress)}
        if accelerator.is_main_process:
            save_file({k: v.contiguous() for k, v in saved.items()}, path)
    train_ref, valid_ref = (saved[k].tolist() for k in ("train", "valid"))
    return ([replace(p, reference=tuple(r)) for p, r in zip(train, train_ref, strict=True)],
            [replace(p, reference=tuple(r)) for p, r in zip(valid, valid_ref, strict=True)])


def dpo_task(config: Any, accelerator: Any, run_dir: Path, log: Log = lambda m: None) -> Task:
    """DPO from the SFT weights (workdir/train/, else model.base) on the pair files; the loop's Task."""
    dc = config.dpo
    files = pair_paths(config)
    start = find_tuned_weights(config, "train")
    model, tokenizer = build_model(config.model, config.train, accelerator.device.type, loop=dc, start=start)
    pairs = {name: build_pairs(path, tokenizer, dc.max_length) for name, path in files.items()}
    pad_id = tokenizer.pad_token_id
    fresh_adapter = config.train.method == "lora" and start is None  # the reference is the base model under it
    train = [p for name, items in pairs.items() if not name.endswith("_valid") for p in items]
    valid = [p for name, items in pairs.items() if name.endswith("_valid") for p in items]
    if dc.eval_every and not valid:  # evaluations (and early stopping, best weights) would silently never happen
        raise UserError(f"dpo.eval_every is set but there are no held-out pairs ({', '.join(map(str, files.values()))}); "
                        "the data stage holds some out with data.validation_fraction > 0 (at least 5 pairs), "
                        "adhere self-pairs with dpo.self_pairs.validation_fraction; or remove dpo.eval_every")
    train, valid = with_reference(train, valid, model, dc, pad_id, accelerator, run_dir, fresh_adapter, log)
    return Task(dc, model, tokenizer, DpoLoss(model, dc.beta), terms(dc.sft_weight), train,
                valid, collate=lambda items: collate_pairs(items, pad_id), count=count_pairs,
                blank=blank_pair, data_files=list(files.values()), out=weights_folder(run_dir, config.train.method))


def train(config: Any, run_dir: Path, log: Log = lambda m: None, resume: Path | None = None) -> dict[str, Any]:
    """Preference-tune as adhere.yaml's dpo section says (`dpo_task`); see `loop.run_loop`."""
    return run_loop(config, config.dpo, dpo_task, run_dir, log, resume)
