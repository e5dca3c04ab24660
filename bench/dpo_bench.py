"""Benchmark of the dpo stage: `adhere dpo` and TRL's `DPOTrainer` side by side on the same pairs.

    .venv/bin/python bench/dpo_bench.py                 # 6 steps of 2 x 2 pairs, 24 train + 48 held out
    .venv/bin/python bench/dpo_bench.py --steps 20      # 80 train pairs + 48 held out
    .venv/bin/python bench/dpo_bench.py --steps 1 --batch-size 1 --grad-accum 1 --train-pairs 2 --held-out 2 --no-docs
    .venv/bin/python bench/dpo_bench.py --trl-batches adhere   # TRL gets adhere's batches, in adhere's order

The default is sized for about 8 minutes on 2 idle cores (from train_bench's rates: adhere about 3 s a
pair, TRL about 10 s with its reference forward); the quick look took 5 minutes on 2 cores shared with
other work. On a busy machine compare the CPU time / wall time and load rows before the ratios.

Both trainers start from the embedded SmolLM2-135M-Instruct folder (the same float32 weights) with a new
LoRA adapter, r=16, alpha 32, no dropout, on every linear layer but the output head (adhere's default
targets; TRL gets "all-linear", the same set), from the same seeded initialisation (checked), so the
reference is the base model under the adapter on both sides. Same batch, accumulation, steps, beta, lr,
cosine schedule without warmup, AdamW, clipping, max length and precision (bf16 autocast where the CPU
runs it fast, else float32); adhere's sft_weight is 0, so both train plain sigmoid DPO.

The pairs come from examples/code_review/data/train.jsonl, in file order: chosen is a record's reference
review, rejected the reference review of another snippet (of another template) from the same split:
the right format and the wrong findings, the signal DPO should learn. The last `--held-out` pairs are
held out for reward accuracy; the train pairs are exactly one epoch (steps x batch x accumulation).
TRL reads the same text the way tests/test_dpo.py feeds it: the prompt rendered by the chat template
with the generation prompt, each answer ending in <|im_end|> (checked: the same tokens as adhere's).

Each trainer runs in its own process (`--only`, writing one JSON file), so each peak RSS is its own.
adhere computes the reference log-probabilities once before its first step (`train.dpo.reference_logps`,
timed here); TRL (default `precompute_ref_log_probs=False`) runs the reference forward inside each step.
So pairs per second is given over the training steps alone and over the steps plus adhere's reference
pass for its train pairs. Held-out reward accuracy for both comes from one evaluator, adhere's
(`loop.evaluate` with `DpoLoss`, the reference being the adapter-disabled base), run on each trained
model; TRL's own `trainer.evaluate()` figure is shown beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from children import adapter_checksum, adhere_adapter_start, peak_rss_gib, row, run_child
from docs_block import cpu_name, machine_line, write_block
from train_bench import precision, step_timer

HEADING = "## Preference tuning: adhere dpo vs TRL DPOTrainer (`bench/dpo_bench.py`)"
END = "<!-- dpo_bench.py to here -->"
SOURCE = ROOT / "examples" / "code_review" / "data" / "train.jsonl"
LORA = {"r": 16, "alpha": 32, "dropout": 0.0}
BETA, LR, MAX_LENGTH, SEED = 0.1, 2e-4, 1024, 0


def begin_marker(kind: str) -> str:
    return f"<!-- dpo_bench.py writes from here ({kind}) -->"


# ---------------------------------------------------------------- data: pairs from the code-review example


def make_pairs(records: list[dict], count: int, held_out: int) -> dict[str, list[dict]]:
    """'pairs' and 'pairs_valid': the first `count` records as pair records, the last `held_out` of them held out.

    Within each split, record i's rejected answer is the reference answer of the first record from
    i + len/2 on (cyclically) with another template and another answer: a review of different code.
    """
    rows = records[:count]
    if len(rows) < count or held_out >= count:
        sys.exit(f"{SOURCE} has {len(records)} records; need --pairs {count} > --held-out {held_out}")
    splits = {"pairs": rows[: count - held_out], "pairs_valid": rows[count - held_out :]}
    out = {}
    for name, split in splits.items():
        n, pairs = len(split), []
        for i, record in enumerate(split):
            other = next((split[(i + n // 2 + k) % n] for k in range(n) if _differs(split[(i + n // 2 + k) % n], record)), None)
            if other is None:
                sys.exit(f"{name}: no record with another template and answer for {record['meta']['id']}; use more pairs")
            pairs.append({"messages": record["messages"][:-1], "chosen": record["messages"][-1],
                          "rejected": other["messages"][-1], "meta": {"id": record["meta"]["id"], "rejected_from": other["meta"]["id"]}})
        out[name] = pairs
    return out


def _differs(other: dict, record: dict) -> bool:
    return other["meta"]["template"] != record["meta"]["template"] and other["messages"][-1]["content"] != record["messages"][-1]["content"]


def write_project(folder: Path, model: Path, args: argparse.Namespace) -> Path:
    """adhere.yaml and runs/bench/data/pairs{,_valid}.jsonl, as `adhere data` would leave them."""
    records = [json.loads(line) for line in SOURCE.read_text().splitlines()]
    data = folder / "runs" / "bench" / "data"
    data.mkdir(parents=True)
    for name, rows in make_pairs(records, args.train_pairs + args.held_out, args.held_out).items():
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dpo = {"beta": BETA, "sft_weight": 0.0, "lr": LR, "max_steps": args.steps, "batch_size": args.batch_size,
           "grad_accum": args.grad_accum, "max_length": MAX_LENGTH, "warmup_ratio": 0.0, "schedule": "cosine",
           "weight_decay": 0.0, "max_grad_norm": 1.0, "precision": "auto", "seed": SEED, "log_every": 1}
    config = {"name": "bench", "model": {"base": str(model)}, "train": {"method": "lora", "lora": {**LORA, "target_modules": []}},
              "dpo": dpo}
    (folder / "adhere.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    return folder / "adhere.yaml"


# ---------------------------------------------------------------- the two trainers, each in its own process


def child_adhere(config_path: Path) -> dict:
    """`adhere dpo` through its Python API; reference pass timed, training-step time from metrics.jsonl's step_s."""
    import adhere.train
    from adhere.config import load_config
    from adhere.train import dpo

    passes, inner = [], dpo.reference_logps

    def timed(model, pairs, *rest):
        start = time.perf_counter()
        out = inner(model, pairs, *rest)
        passes.append((len(pairs), time.perf_counter() - start))
        return out

    dpo.reference_logps = timed  # with_reference looks the name up at call time
    config = load_config(config_path)
    run_dir = adhere.train.run(config, stage="dpo")
    dpo.reference_logps = inner
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    rss_gib = peak_rss_gib()  # training's peak, before the evaluator loads the saved adapter on a second model
    shared = shared_eval_saved(config, run_dir / "adapter")
    return {"train_s": sum(s["step_s"] for s in steps), "first_step_s": steps[0]["step_s"], "steps": len(steps),
            "reference_s": passes[0][1], "reference_valid_s": sum(s for _, s in passes[1:]),
            "step0_loss": steps[0]["dpo_loss"], "final_train_loss": summary["final_train_loss"],
            "reward_accuracy": summary["final_valid"]["reward_accuracy"], "valid_loss": summary["final_valid"]["dpo_loss"],
            "valid_margin": summary["final_valid"]["margin"], "bf16": summary["bf16"],
            "shared_reward_accuracy": shared["reward_accuracy"], "right": shared["right"], "rss_gib": rss_gib}


def shared_eval_saved(config, adapter: Path) -> dict:
    """`shared_eval` of the adapter adhere wrote, on the base model it was trained on, as TRL's is evaluated."""
    import torch
    from accelerate import Accelerator
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from adhere.models import load_tokenizer

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(config.model.base, dtype=torch.float32), adapter)
    accelerator = Accelerator(cpu=True, mixed_precision="bf16" if precision() == "bfloat16" else "no")
    return shared_eval(model, load_tokenizer(config.model), config.stage_dir("data") / "pairs_valid.jsonl", config.dpo, accelerator)


def child_trl(config_path: Path, same_batches: bool = False) -> dict:
    """TRL's DPOTrainer on the same pair files, prompts rendered as text as tests/test_dpo.py does.

    With `same_batches`, TRL gets adhere's micro-batches in adhere's order (pairs reordered, sequential
    sampler); by default it samples its own random batches.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import DPOConfig, DPOTrainer

    from adhere import hardware
    from adhere.config import load_config
    from adhere.models import load_tokenizer
    from adhere.train.batches import read_records
    from adhere.train.dpo import build_pairs

    config = load_config(config_path)
    dc, data = config.dpo, config.stage_dir("data")
    tokenizer = AutoTokenizer.from_pretrained(config.model.base)
    model = AutoModelForCausalLM.from_pretrained(config.model.base, dtype=torch.float32)
    records = {name: read_records(data / f"{name}.jsonl") for name in ("pairs", "pairs_valid")}
    rendered = build_pairs(data / "pairs.jsonl", load_tokenizer(config.model), dc.max_length)  # as adhere's run renders them
    if same_batches:
        order = [i for batch in adhere_order(config_path) for i in batch]
        records["pairs"], rendered = [records["pairs"][i] for i in order], [rendered[i] for i in order]

    def as_text(rows: list[dict]):
        return Dataset.from_list([{"prompt": tokenizer.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True),
                                   "chosen": r["chosen"]["content"] + "<|im_end|>", "rejected": r["rejected"]["content"] + "<|im_end|>"}
                                  for r in rows])

    args = DPOConfig(
        output_dir=str(config_path.parent / "trl"), max_steps=dc.max_steps, per_device_train_batch_size=dc.batch_size,
        per_device_eval_batch_size=dc.batch_size, gradient_accumulation_steps=dc.grad_accum, learning_rate=dc.lr,
        lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=dc.max_grad_norm, beta=dc.beta,
        loss_type=["sigmoid"], bf16=hardware.bf16_available("cpu"), use_cpu=True, max_length=dc.max_length,
        gradient_checkpointing=False,  # DPOConfig defaults to True; adhere's is off
        logging_steps=1, eval_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True, seed=dc.seed,
        train_sampling_strategy="sequential" if same_batches else "random",
    )
    lora = LoraConfig(r=config.train.lora.r, lora_alpha=config.train.lora.alpha, lora_dropout=config.train.lora.dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    set_seed(dc.seed)  # as adhere's loop does just before building the model, so lora_A starts the same
    timer = step_timer()
    trainer = DPOTrainer(model=model, args=args, train_dataset=as_text(records["pairs"]), processing_class=tokenizer,
                         peft_config=lora, callbacks=[timer])
    adapter_start = adapter_checksum(trainer.model)
    mask_check = compare_tokens(trainer.train_dataset, rendered)
    trainer.train()
    rss_gib = peak_rss_gib()  # training's peak, as adhere's is read
    trl_eval = trainer.evaluate(as_text(records["pairs_valid"]))
    shared = shared_eval(trainer.model, tokenizer, data / "pairs_valid.jsonl", dc, trainer.accelerator)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"train_s": timer.ends[-1] - timer.start, "first_step_s": timer.ends[0] - timer.start, "steps": len(timer.ends),
            "step0_loss": losses[0], "final_train_loss": losses[-1], "reward_accuracy": shared["reward_accuracy"], "right": shared["right"], "rss_gib": rss_gib,
            "valid_loss": shared["dpo_loss"], "valid_margin": shared["margin"], "bf16": args.bf16,
            "trl_reward_accuracy": trl_eval["eval_rewards/accuracies"], "trl_valid_loss": trl_eval["eval_loss"],
            "adapter_start": adapter_start, "mask_check": mask_check, "optim": getattr(args.optim, "value", str(args.optim))}


def shared_eval(model, tokenizer, path: Path, dc, accelerator) -> dict:
    """adhere's held-out DPO terms (reward accuracy, loss, margin) of a trained PEFT model, reference = adapter disabled."""
    from adhere.train.dpo import (
        DpoLoss,
        build_pairs,
        collate_pairs,
        count_pairs,
        reference_logps,
        terms,
    )
    from adhere.train.loop import evaluate

    pad = tokenizer.pad_token_id
    pairs = build_pairs(path, tokenizer, dc.max_length)
    ref = reference_logps(model, pairs, dc.batch_size, pad, accelerator, disable_adapter=True)
    policy = reference_logps(model, pairs, dc.batch_size, pad, accelerator, disable_adapter=False)  # same batches
    right = ((policy[:, 0] - ref[:, 0]) - (policy[:, 1] - ref[:, 1]) > 0).tolist()  # each pair's margin > 0
    pairs = [replace(p, reference=tuple(ref[i].tolist())) for i, p in enumerate(pairs)]
    means = evaluate(DpoLoss(model, dc.beta), pairs, dc.batch_size, lambda items: collate_pairs(items, pad), count_pairs,
                     terms(0.0), accelerator)
    return means | {"right": right}


def compare_tokens(prepared, pairs) -> dict:
    """How TRL's tokenized pairs compare with adhere's rendering of the same records, in the same order.

    adhere's sequence is TRL's plus the untrained "\\n" after <|im_end|>; TRL's completion is adhere's trained tokens.
    """
    same = 0
    for prepared_row, pair in zip(prepared, pairs, strict=True):
        for side, ex in (("chosen", pair.chosen), ("rejected", pair.rejected)):
            same += (prepared_row["prompt_ids"] + prepared_row[f"{side}_ids"] == ex.input_ids[:-1]
                     and len(prepared_row[f"{side}_ids"]) == ex.trained_tokens)
    return {"sides": 2 * len(pairs), "same": same}


def adhere_order(config_path: Path) -> list[list[int]]:
    """The train pairs of each micro-batch adhere's loop consumes (one process), from its seeded order."""
    from adhere.config import load_config
    from adhere.models import load_tokenizer
    from adhere.train.batches import epoch_batches
    from adhere.train.dpo import build_pairs

    config = load_config(config_path)
    dc = config.dpo
    pairs = build_pairs(config.stage_dir("data") / "pairs.jsonl", load_tokenizer(config.model), dc.max_length)
    batches, epoch = [], 0
    while len(batches) < dc.max_steps * dc.grad_accum:  # as loop.micro_batches does
        batches += epoch_batches(pairs, dc.batch_size, dc.seed, epoch)
        epoch += 1
    return batches[: dc.max_steps * dc.grad_accum]


# ---------------------------------------------------------------- the parent: run both, compare, write the table


def table(a: dict, t: dict) -> str:
    """The markdown table, adhere beside TRL, with ratios."""
    sec, num, pct = (lambda v: f"{v:.1f} s"), (lambda v: f"{v:.4f}"), (lambda v: f"{v:.1%}")
    return "\n".join([
        "| | adhere dpo | TRL DPOTrainer | adhere / TRL |",
        "|---|---|---|---|",
        row("trained pairs / s (training steps + adhere's reference pass over its train pairs)", a["pps_with_ref"], t["pps"], lambda v: f"{v:.3f}"),
        row("trained pairs / s (training steps only)", a["pps"], t["pps"], lambda v: f"{v:.3f}"),
        row("training steps, wall time", a["train_s"], t["train_s"], sec),
        (f"| reference pass before step 1 (train pairs; held-out pairs) | {a['reference_s']:.1f} s; {a['reference_valid_s']:.1f} s | "
        "- (a reference forward inside each step) | - |"),
        row("first step (TRL's holds the process's first forward; adhere's follows its reference pass)", a["first_step_s"],
            t["first_step_s"], sec),
        row("whole process, wall time (imports, load, tokenize, train, eval)", a["wall_s"], t["wall_s"], sec),
        row("peak memory (RSS of the process, up to the end of training)", a["rss_gib"], t["rss_gib"], lambda v: f"{v:.2f} GiB"),
        row(f"CPU time / wall time of the process (of {os.cpu_count()} cores)", a["cpu_s"] / a["wall_s"], t["cpu_s"] / t["wall_s"],
            lambda v: f"{v:.2f}"),
        f"| machine load average (1 min) before; after | {a['load'][0]:.1f}; {a['load'][1]:.1f} | {t['load'][0]:.1f}; {t['load'][1]:.1f} | - |",
        row("step-0 loss (first step, before any update)", a["step0_loss"], t["step0_loss"], num),
        row("final train loss (last step)", a["final_train_loss"], t["final_train_loss"], num),
        row("held-out reward accuracy (adhere's loop for adhere; adhere's evaluator on TRL's model)", a["reward_accuracy"],
            t["reward_accuracy"], pct, ratio=False),
        row("held-out reward accuracy, one evaluator on both saved models (each pair's own batch)", a["shared_reward_accuracy"],
            t["reward_accuracy"], pct, ratio=False),
        f"| held-out reward accuracy by TRL's `trainer.evaluate()` | - | {t['trl_reward_accuracy']:.1%} | - |",
        row("held-out DPO loss (one evaluator: adhere's)", a["valid_loss"], t["valid_loss"], num),
        row("held-out mean margin, beta x log-ratio difference", a["valid_margin"], t["valid_margin"], num),
    ])


def verdict(a: dict, t: dict, held_out: int) -> list[str]:
    """The issue's targets, checked against the numbers, said plainly."""
    speed, memory = a["pps_with_ref"] / t["pps"], a["rss_gib"] / t["rss_gib"]
    points = 100 * (a["shared_reward_accuracy"] - t["reward_accuracy"])
    from adhere.eval.stats import mcnemar

    test = mcnemar(t["right"], a["right"])  # b01: pairs only adhere's model gets right
    step0 = abs(a["step0_loss"] - t["step0_loss"])
    return [
        f"- throughput: adhere {speed:.2f}x TRL's, its reference pass counted (target >= 1.5x): {'met' if speed >= 1.5 else 'NOT met'}.",
        f"- peak memory: adhere {memory:.2f}x TRL's (target <= 1.0x): {'met' if memory <= 1.0 else 'NOT met'}.",
        (f"- held-out reward accuracy: adhere {points:+.1f} points from TRL's (target within 3; one pair of {held_out} is "
        f"{100 / held_out:.1f}): {'met' if abs(points) <= 3 else 'NOT met'}; the pairs they disagree on: {test.b01} only adhere's "
        f"model gets right, {test.b10} only TRL's (exact McNemar p = {test.p_value:.2f})."),
        (f"- step-0 loss: |adhere - TRL| = {step0:.1e} (a new adapter is the reference, so both should be ln 2 = 0.6931): "
        f"{'match' if step0 <= 1e-4 else 'DIFFER'}."),
    ]


def compare(args: argparse.Namespace, config_path: Path) -> str:
    """Run both trainers and put their numbers on the same footing."""
    results = {}
    for which, child in (("adhere", "adhere"), ("trl", "trl-same" if args.trl_batches == "adhere" else "trl")):
        print(f"training with {child} ...", flush=True)
        results[which] = run_child(__file__, child, config_path)
        print(f"  {results[which]['train_s']:.1f} s of training steps, {results[which]['wall_s']:.1f} s in all", flush=True)
    a, t = results["adhere"], results["trl"]
    pairs = args.steps * args.batch_size * args.grad_accum
    a["pps"], t["pps"] = pairs / a["train_s"], pairs / t["train_s"]
    a["pps_with_ref"] = pairs / (a["train_s"] + a["reference_s"])
    check = t["mask_check"]
    order = "adhere's, in adhere's order" if args.trl_batches == "adhere" else "its own (random sampler)"
    notes = [
        (f"- work: each trained {pairs} pairs ({args.steps} steps x {args.batch_size} x {args.grad_accum}), "
        f"{args.train_pairs} train pairs, {args.held_out} held out; TRL batches: {order}."),
        (f"- tokens: of {check['sides']} train sides, TRL's prompt + answer tokens equal adhere's rendering (less its untrained "
        f"final \"\\n\") with the same trained tokens for {check['same']}."),
        (f"- LoRA start: sum |lora_A| adhere {a['adapter_start']:.4f}, TRL {t['adapter_start']:.4f}; bf16 autocast: "
        f"adhere {a['bf16']}, TRL {t['bf16']}; optimizer: TRL {t['optim']}, adhere torch.optim.AdamW."),
    ]
    return "\n".join([table(a, t), "", *verdict(a, t, args.held_out), "", *notes])


def write_docs(report: str, args: argparse.Namespace, seconds: float) -> None:
    """Put the report under HEADING in docs/benchmarks.md, replacing an earlier run's block of the same precision."""
    command = " ".join([".venv/bin/python bench/dpo_bench.py", *sys.argv[1:]])
    intro = (
        f"`{command}` on {datetime.date.today().isoformat()}, {seconds / 60:.1f} minutes: {machine_line('trl')}. "
        f"SmolLM2-135M-Instruct (embedded), a new LoRA adapter r={LORA['r']} alpha {LORA['alpha']} dropout {LORA['dropout']} on every "
        f"linear layer but the head, {args.steps} steps of batch {args.batch_size} x accumulation {args.grad_accum} pairs, beta {BETA}, "
        f"sigmoid loss (adhere sft_weight 0), lr {LR} cosine without warmup, max length {MAX_LENGTH}, "
        f"{'bf16 autocast' if precision() == 'bfloat16' else 'float32 (no fast bf16 on this CPU)'} on both sides. Pairs from "
        f"examples/code_review/data/train.jsonl (chosen: the reference review; rejected: another snippet's). "
        f"Each trainer runs in its own process."
    )
    write_block(HEADING, begin_marker(precision()), END, f"{intro}\n\n{report}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps for each trainer")
    parser.add_argument("--batch-size", type=int, default=2, help="pairs per micro-step")
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--train-pairs", type=int, default=None, help="default steps x batch x accumulation (one epoch)")
    parser.add_argument("--held-out", type=int, default=48, help="pairs held out for reward accuracy")
    parser.add_argument("--no-docs", action="store_true", help="print the table only; leave docs/benchmarks.md alone")
    parser.add_argument("--trl-batches", choices=["own", "adhere"], default="own",
                        help="'own': TRL's random batches (its default); 'adhere': adhere's batches, in adhere's order")
    parser.add_argument("--only", choices=["adhere", "trl", "trl-same"], help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        result = child_adhere(args.config) if args.only == "adhere" else child_trl(args.config, args.only == "trl-same")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_s"] = usage.ru_utime + usage.ru_stime
        if args.only == "adhere":
            result["adapter_start"] = adhere_adapter_start(args.config, "dpo")  # after the peak memory was read
        args.out.write_text(json.dumps(result))
        return
    args.train_pairs = args.train_pairs or args.steps * args.batch_size * args.grad_accum
    from adhere.models.embedded import ensure_embedded_model

    started = time.perf_counter()
    print(f"{cpu_name()}, {os.cpu_count()} cores; both trainers in {precision()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dpo-bench-") as tmp:
        report = compare(args, write_project(Path(tmp), ensure_embedded_model(), args))
    seconds = time.perf_counter() - started
    print(report)
    print(f"bench took {seconds / 60:.1f} minutes")
    if not args.no_docs:
        write_docs(report, args, seconds)


if __name__ == "__main__":
    main()
