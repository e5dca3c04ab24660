"""The training loop: supervised tuning with loss on assistant tokens only, and DPO, on accelerate.

Reads top to bottom (`run_loop`): build the task (model and items), the optimizer and schedule,
then for each optimizer step run `grad_accum` micro-steps and step. LoRA and full fine-tuning
share it; they differ only in `train.model.build_model`. Supervised tuning (`sft_task`) and
preference tuning (`train.dpo.dpo_task`) share it too; they differ in the `Task`: what a batch
holds, and the loss terms with what each is normalised by.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from adhere.generation.weights import weights_folder
from adhere.models.masking import IGNORE_INDEX
from adhere.train import checkpoints
from adhere.train.batches import Example, build_examples, collate, epoch_batches, plan_steps, read_records
from adhere.train.model import build_model

Log = Callable[[dict[str, Any]], None]


class TokenLoss(torch.nn.Module):
    """Summed cross-entropy over trained positions only, computing logits just there.

    The output head runs on the hidden states of trained positions, never on the whole
    [batch, seq, vocab] block: with SmolLM2's 49,152-word vocabulary and mostly-prompt examples
    that is most of the head's time and memory. The model's own forward runs, and a pre-hook on
    its output head hands the head only those positions, so whatever the forward does to the
    head's output (Gemma-2's final-logit softcapping, Granite's logits_scaling, Cohere's
    logit_scale) applies here too: training and validation see the logits the deployed model
    produces. Those steps are element-wise, so they do not mind the [trained, vocab] shape.
    Wrapping the model in a module keeps DDP's gradient hooks on the forward pass.
    """

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner

    def token_nll(self, input_ids: Any, attention_mask: Any, targets: Any) -> tuple[Any, Any]:
        """(the negative log-likelihood of each trained position's target, in row-major order; the mask of them)."""
        keep = targets != IGNORE_INDEX
        head = self.inner.get_output_embeddings()
        hook = head.register_forward_pre_hook(lambda module, args: (args[0][keep],))
        try:
            logits = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        finally:
            hook.remove()
        nll = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets[keep], reduction="none")
        return nll, keep

    def forward(self, input_ids: Any, attention_mask: Any, targets: Any) -> dict[str, Any]:
        return {"loss": self.token_nll(input_ids, attention_mask, targets)[0].sum()}


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup, then cosine, linear or constant decay, as a factor of the peak rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - progress if schedule == "linear" else 1.0

    return factor


def micro_batches(items: list[Any], batch_size: int, seed: int, blank: Callable[[Any], Any], rank: int = 0,
                  world: int = 1) -> Iterator[list[Any]]:
    """This process's share of each micro-batch, epoch after epoch, each epoch in a new seeded order.

    The order is drawn for global micro-batches of `batch_size * world` items and process `rank`
    takes every `world`-th of them, so N processes with batch b see exactly the items one process
    with batch N*b sees, and (with the normalisation below) take the same steps. A process left
    without an item in a short last batch gets `blank(item)`, one with nothing to train, since every
    process must take part in each backward pass.
    """
    epoch = 0
    while True:
        for indices in epoch_batches(items, batch_size * world, seed, epoch):
            yield [items[i] for i in indices[rank::world]] or [blank(items[indices[0]])]
        epoch += 1


Terms = dict[str, tuple[str, float]]  # loss term -> (the count it is divided by, its weight; 0: only logged)


@dataclass
class Task:
    """What one run of the loop trains, built once the process and device are set up: supervised tuning
    (`sft_task` below) or preference tuning (`adhere.train.dpo.dpo_task`). The loop is the same for both."""

    settings: Any  # the LoopConfig that runs: config.train or config.dpo
    model: Any
    tokenizer: Any
    loss: torch.nn.Module  # forward(**batch) -> {term: its sum over the micro-batch}
    terms: Terms
    train: list[Any]  # what one batch row (or pair of rows) is made from: Example, or a DPO Pair
    valid: list[Any]
    collate: Callable[[list[Any]], dict[str, Any]]  # items -> the loss module's tensors
    count: Callable[[dict[str, Any]], dict[str, int]]  # a collated batch -> each count; "tokens": trained tokens
    blank: Callable[[Any], Any]  # an item like this one that trains nothing
    data_files: list[Path]  # hashed into checkpoints, so resume can tell the data changed
    out: Path  # where the trained weights are written
    begin_step: Callable[[int], None] | None = None  # told each step's number before its batches are collated (GRPO)


SFT_TERMS: Terms = {"loss": ("tokens", 1.0)}  # the summed token loss, per trained token


def sft_count(batch: dict[str, Any]) -> dict[str, int]:
    """The trained tokens of a collated SFT batch."""
    return {"tokens": int((batch["targets"] != IGNORE_INDEX).sum())}


def sft_task(config: Any, accelerator: Any, run_dir: Path, log: Log) -> Task:
    """Supervised tuning of `config.model` on workdir/data/train.jsonl; validation on valid.jsonl."""
    tc, data_dir = config.train, config.stage_dir("data")
    model, tokenizer = build_model(config.model, tc, accelerator.device.type)
    train_ex = build_examples(read_records(data_dir / "train.jsonl"), tokenizer, tc.max_length, str(data_dir / "train.jsonl"))
    valid_path = data_dir / "valid.jsonl"
    valid_records = read_records(valid_path) if valid_path.is_file() else []
    valid_ex = build_examples(valid_records, tokenizer, tc.max_length, str(valid_path)) if valid_records else []
    pad_id = tokenizer.pad_token_id
    return Task(tc, model, tokenizer, TokenLoss(model), SFT_TERMS, train_ex, valid_ex,
                collate=lambda examples: collate(examples, pad_id), count=sft_count,
                blank=lambda e: Example(e.input_ids, [IGNORE_INDEX] * len(e.labels)),
                data_files=[data_dir / "train.jsonl", valid_path], out=weights_folder(run_dir, tc.method))


def means(sums: dict[str, float], counts: dict[str, int], terms: Terms) -> dict[str, float]:
    """Each term's sum over its count, and `loss`, the weighted sum of the terms that train."""
    out = {name: sums[name] / max(1, counts[count]) for name, (count, _) in terms.items()}
    return {**out, "loss": sum(weight * out[name] for name, (_, weight) in terms.items() if weight)}


def evaluate(loss_fn: Any, items: list[Any], batch_size: int, collate_items: Callable[[list[Any]], dict[str, Any]],
             count: Callable[[dict[str, Any]], dict[str, int]], terms: Terms, accelerator: Any) -> dict[str, float]:
    """Every term's mean over `items` (its sum over its count, as in training) and the loss."""
    sums, counts = dict.fromkeys(terms, 0.0), {name: 0 for name, _ in terms.values()}
    loss_fn.eval()
    with torch.no_grad(), accelerator.autocast():
        for start in range(0, len(items), batch_size):
            batch = {k: v.to(accelerator.device) for k, v in collate_items(items[start : start + batch_size]).items()}
            found, batch_sums = count(batch), loss_fn(**batch)
            counts = {k: v + found[k] for k, v in counts.items()}
            sums = {k: v + float(batch_sums[k]) for k, v in sums.items()}
    loss_fn.train()
    return means(sums, counts, terms)


def train(config: Any, run_dir: Path, log: Log = lambda m: None, resume: Path | None = None) -> dict[str, Any]:
    """Tune `config.model` on workdir/data/train.jsonl (`sft_task`); see `run_loop`."""
    return run_loop(config, config.train, sft_task, run_dir, log, resume)


def run_loop(config: Any, settings: Any, make_task: Callable[[Any, Any, Path, Log], Task], run_dir: Path,
             log: Log = lambda m: None, resume: Path | None = None) -> dict[str, Any]:
    """Train the task `make_task` builds; write metrics.jsonl and the adapter or model to `run_dir`.

    Validation (for `eval_every`, early stopping and the best weights) is measured on the task's
    validation items (for SFT workdir/data/valid.jsonl, carved from the training rows by the data
    stage; the eval split is left untouched for `adhere eval`). With `resume`, a checkpoint folder,
    training continues from it and ends with the weights an uninterrupted run would have.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    from adhere import hardware

    tc = settings
    device = hardware.default_device()
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and hardware.bf16_available(device))
    # Accelerate keeps one process-wide state and refuses a second Accelerator with another precision;
    # a program that trains twice (adhere run, the tests) resets it. PartialState, which holds the
    # distributed set-up under `accelerate launch`, is kept. Private API: re-check on accelerate 2.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=device == "cpu")
    set_seed(tc.seed)
    task = make_task(config, accelerator, run_dir, log)  # log: a task's own set-up may report progress
    model, tokenizer, train_ex, valid_ex = task.model, task.tokenizer, task.train, task.valid

    world = accelerator.num_processes
    _, total_steps = plan_steps(len(train_ex), tc.batch_size, tc.grad_accum, tc.epochs, tc.max_steps, world)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    warmup = int(tc.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tc.schedule, warmup, total_steps))
    loss_fn, optimizer = accelerator.prepare(task.loss, optimizer)
    stream = micro_batches(train_ex, tc.batch_size, tc.seed, task.blank, accelerator.process_index, world)

    metrics_path, best = run_dir / "metrics.jsonl", checkpoints.Best(tc.early_stopping_patience)
    data_sha = checkpoints.data_digest(task.data_files)
    first_step, tokens_seen = _resume(resume, model, optimizer, scheduler, best, stream, tc.grad_accum, metrics_path, total_steps)
    started, start_tokens, valid, final_valid, stop = time.perf_counter(), tokens_seen, None, None, False
    for step in range(first_step, total_steps + 1):
        step_started = time.perf_counter()
        if task.begin_step is not None:
            task.begin_step(step)
        window = [task.collate(next(stream)) for _ in range(tc.grad_accum)]
        # Loss normalisation: each term's sums over every micro-batch of this step are divided by its
        # count (SFT: trained tokens; DPO: pairs, and chosen tokens for its SFT term) over the whole
        # accumulated batch (on every process), so batch 1 x accumulation 8 and batch 8 x
        # accumulation 1 give the same gradient.
        counts = {k: sum(task.count(b)[k] for b in window) for k in task.count(window[0])}
        counts = dict(zip(counts, accelerator.reduce(torch.tensor(list(counts.values()), device=accelerator.device), reduction="sum").tolist()))
        step_sums = torch.zeros(len(task.terms), device=accelerator.device)
        for i, batch in enumerate(window):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            sync = accelerator.no_sync(loss_fn) if i < len(window) - 1 else nullcontext()
            with sync, accelerator.autocast():
                sums = loss_fn(**batch)
            loss = sum(weight * sums[name] / max(1, counts[count]) for name, (count, weight) in task.terms.items() if weight)
            # DDP averages gradients over processes; the factor makes that a sum, as the normalisation needs.
            accelerator.backward(loss * accelerator.num_processes)
            step_sums += torch.stack([sums[name].detach().float() for name in task.terms])
        grad_norm = float(accelerator.clip_grad_norm_(params, tc.max_grad_norm))
        lr = scheduler.get_last_lr()[0]  # the rate this step uses; after scheduler.step() it is the next step's
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        terms = means(dict(zip(task.terms, accelerator.reduce(step_sums, reduction="sum").tolist())), counts, task.terms)
        loss = terms.pop("loss")
        if not math.isfinite(loss):
            from adhere.errors import UserError

            raise UserError(f"training stopped at step {step}: the loss is {loss}; lower {tc.section}.lr or check the data")
        tokens_seen += counts["tokens"]
        step_seconds = time.perf_counter() - step_started
        if valid_ex and (step == total_steps or (tc.eval_every and step % tc.eval_every == 0)):
            valid = final_valid = evaluate(loss_fn, valid_ex, tc.batch_size, task.collate, task.count, task.terms, accelerator)
            stop = best.update(step, valid["loss"], model)
        state = {"trained_tokens": tokens_seen, "valid_loss": valid["loss"] if valid else None, "data_sha256": data_sha}
        if step % tc.log_every == 0 or step == total_steps or valid is not None:
            elapsed, done = time.perf_counter() - started, step - first_step + 1
            record = {"step": step, "loss": round(loss, 5), **({k: round(v, 5) for k, v in terms.items() if k != "loss"}),
                      "lr": lr, "grad_norm": round(grad_norm, 4),
                      "trained_tokens": tokens_seen, "tokens_per_s": round((tokens_seen - start_tokens) / elapsed, 1),
                      "step_s": round(step_seconds, 3), "elapsed_s": round(elapsed, 2), "eta_s": round(elapsed / done * (total_steps - step), 1),
                      "total_steps": total_steps}
            if valid is not None:
                record |= {"valid_" + k: round(v, 5) for k, v in valid.items()}
                valid = None
            if accelerator.is_main_process:
                with metrics_path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
            log(record)
        # The checkpoint after the step's metrics line: a kill between the two leaves a line past the
        # checkpoint, which resume drops, never a checkpointed step without its line.
        if tc.save_every and step % tc.save_every == 0 and step < total_steps and not stop and accelerator.is_main_process:
            checkpoints.save(run_dir, step, model, optimizer, scheduler, state, tc.keep_last, best)
        if stop:
            break

    if best.state is not None and final_valid is not None and best.loss < final_valid["loss"]:
        checkpoints.restore_trainable(model, best.state)  # the weights written below are the best validated ones
    summary = {"steps": step, "stopped_early": stop, "best_step": best.step, "best_valid_loss": best.loss if best.step is not None else None,
               "train_examples": len(train_ex), "valid_examples": len(valid_ex), "trained_tokens": tokens_seen,
               "final_train_loss": loss, "final_valid_loss": final_valid["loss"] if final_valid else None, "seconds": round(time.perf_counter() - started, 2),
               "device": device, "bf16": bf16, **precision_report(model, bf16)}
    if final_valid and len(final_valid) > 2:  # the terms beside the loss (DPO: reward accuracy, margin, ...)
        summary["final_valid"] = final_valid
    if accelerator.is_main_process:
        accelerator.unwrap_model(loss_fn).inner.save_pretrained(task.out)
        tokenizer.save_pretrained(task.out)  # the exact chat template used in training travels with the weights
    return summary


def _resume(checkpoint: Path | None, model: Any, optimizer: Any, scheduler: Any, best: checkpoints.Best,
            stream: Iterator[Any], grad_accum: int, metrics_path: Path, total_steps: int) -> tuple[int, int]:
    """(first step, trained tokens so far): 1 and 0 for a fresh run, else where `checkpoint` left off.

    Resuming restores weights, optimizer, schedule, RNG and the best-so-far state, moves the data
    stream exactly where it was, and drops metrics lines written after the checkpoint.
    """
    if checkpoint is None:
        metrics_path.write_text("")
        return 1, 0
    progress = checkpoints.load(checkpoint, model, optimizer, scheduler, best)
    if progress["step"] >= total_steps:
        from adhere.errors import UserError

        raise UserError(f"cannot resume from {checkpoint}: it is at step {progress['step']}, and this run has "
                        f"{total_steps} steps; start over without --resume")
    for _ in range(progress["step"] * grad_accum):  # the data stream, exactly where it was
        next(stream)
    kept = [line for line in metrics_path.read_text().splitlines() if _logged_step(line) <= progress["step"]]
    metrics_path.write_text("".join(line + "\n" for line in kept))
    return progress["step"] + 1, progress["trained_tokens"]


def precision_report(model: Any, bf16_autocast: bool) -> dict[str, Any]:
    """What ran: the compute precision and the dtypes of the trained and the frozen weights, as read off the model."""
    trained = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad})
    frozen = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if not p.requires_grad})
    compute = "bf16 autocast" if bf16_autocast else ("bf16" if trained == ["bfloat16"] else "fp32")
    return {"precision": {"compute": compute, "trainable_weights": trained, "frozen_weights": frozen}}


def _logged_step(line: str) -> float:
    """The step of a metrics.jsonl line; a line torn by a kill mid-write counts as after every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError):
        return math.inf
