"""Benchmark of the grpo stage: `adhere grpo` and TRL's `GRPOTrainer` side by side on the same prompts and rewards.

    .venv/bin/python bench/grpo_bench.py                   # 6 steps of 2 prompts x 4 answers, up to 128 tokens each
    .venv/bin/python bench/grpo_bench.py --steps 2 --max-new-tokens 16 --no-docs   # a quick look

Both start from the embedded SmolLM2-135M-Instruct folder (the same float32 weights) with a new LoRA adapter,
r=16, alpha 32, no dropout, on every linear layer but the output head (TRL gets "all-linear", the same set),
seeded the same way. Same prompts (the first steps x batch prompts of examples/code_review/data/train.jsonl,
one epoch), group size, prompts per step, max completion length, temperature 1, top_p 1, lr, cosine schedule
without warmup, beta 0 (no reference model), DAPO loss (TRL's default loss_type), advantages scaled by the
group's std, one update per generation, bf16 autocast for training where the CPU runs it fast.

The reward is the same function on both sides, adhere's graders: item F1 of the review's suggestions on
(line, rule) against the reference review, plus 0.5 if the answer parses as JSON; adhere gets it from its
`grpo.rewards` ([{name: item_f1, item: suggestion}, {name: json, weight: 0.5}]), TRL as a reward function
calling the same `adhere.eval.metrics` code.

Generation differs by design and is measured apart: adhere samples with its LocalBackend on the live
weights (float32 on the CPU, one seeded generator per answer); TRL with `model.generate` on its unwrapped
model. Time is split into generation (adhere's `LocalBackend.generate_ids`, TRL's `_generate`, each timed
around the call) and the rest of each step (scoring, the forward and backward, the optimizer). Each trainer
runs in its own process, so each peak RSS is its own.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from children import adapter_checksum, adhere_adapter_start, peak_rss_gib, row, run_child
from docs_block import cpu_name, machine_line, write_block
from train_bench import precision, step_timer

HEADING = "## Reinforcement tuning: adhere grpo vs TRL GRPOTrainer (`bench/grpo_bench.py`)"
END = "<!-- grpo_bench.py to here -->"
SOURCE = ROOT / "examples" / "code_review" / "data" / "train.jsonl"
LORA = {"r": 16, "alpha": 32, "dropout": 0.0}
LR, MAX_LENGTH, SEED, GROUP = 1e-5, 1024, 0, 4
ITEM = {"list": "suggestions", "key": ["line", "rule"]}


def begin_marker(kind: str) -> str:
    return f"<!-- grpo_bench.py writes from here ({kind}) -->"


def write_project(folder: Path, model: Path, args: argparse.Namespace) -> Path:
    """adhere.yaml and runs/bench/data/train.jsonl (the prompts with their reference reviews), as `adhere data` leaves it."""
    records = [json.loads(line) for line in SOURCE.read_text().splitlines()][: args.steps * args.prompts]
    data = folder / "runs" / "bench" / "data"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    grpo = {"rewards": [{"name": "item_f1", "item": "suggestion"}, {"name": "json", "weight": 0.5}],
            "group_size": GROUP, "batch_size": args.prompts, "grad_accum": 1, "max_new_tokens": args.max_new_tokens,
            "temperature": 1.0, "top_p": 1.0, "lr": LR, "max_steps": args.steps, "max_length": MAX_LENGTH,
            "schedule": "cosine", "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0, "precision": "auto",
            "seed": SEED, "log_every": 1, "beta": 0.0}
    config = {"name": "bench", "model": {"base": str(model)}, "train": {"method": "lora", "lora": {**LORA, "target_modules": []}},
              "spec": {"task": "review", "output": {"format": "json"}}, "eval": {"item_f1": {"suggestion": ITEM}}, "grpo": grpo}
    (folder / "adhere.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    return folder / "adhere.yaml"


def reward(completion: str, reference: str) -> float:
    """What both trainers score an answer with: item F1 on (line, rule) + 0.5 x JSON parses (adhere's graders)."""
    from adhere.eval import metrics
    from adhere.spec.constraints import json_valid

    return metrics.item_f1(completion, reference, path=ITEM["list"], key=tuple(ITEM["key"])) + 0.5 * float(json_valid(completion))


# ---------------------------------------------------------------- the two trainers, each in its own process


class Clock:
    """Seconds spent inside the wrapped calls."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def child_adhere(config_path: Path) -> dict:
    """`adhere grpo` through its Python API; generation timed around LocalBackend.generate_ids."""
    import adhere.train
    from adhere.config import load_config
    from adhere.generation.local import LocalBackend

    clock = Clock()
    LocalBackend.generate_ids = clock.wrap(LocalBackend.generate_ids)
    started = time.perf_counter()
    run_dir = adhere.train.run(load_config(config_path), stage="grpo")
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"train_s": sum(s["step_s"] for s in steps), "generate_s": clock.seconds, "steps": len(steps),
            "rewards": [s["reward"] for s in steps], "lengths": [s["completion_tokens"] for s in steps],
            "zero_std": [s["zero_std_groups"] for s in steps], "bf16": summary["bf16"], "rss_gib": peak_rss_gib(),
            "run_s": time.perf_counter() - started}


def child_trl(config_path: Path) -> dict:
    """TRL's GRPOTrainer on the same prompts (as chat messages) and the same reward."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import GRPOConfig, GRPOTrainer

    from adhere import hardware
    from adhere.config import load_config
    from adhere.train.batches import read_records

    config = load_config(config_path)
    gc = config.grpo
    tokenizer = AutoTokenizer.from_pretrained(config.model.base)
    model = AutoModelForCausalLM.from_pretrained(config.model.base, dtype=torch.float32)
    records = read_records(config.stage_dir("data") / "train.jsonl")
    dataset = Dataset.from_list([{"prompt": r["messages"][:-1], "reference": r["messages"][-1]["content"]} for r in records])

    def review_reward(prompts, completions, reference, **kwargs):
        return [reward(c[-1]["content"] if isinstance(c, list) else c, ref) for c, ref in zip(completions, reference)]

    args = GRPOConfig(
        output_dir=str(config_path.parent / "trl"), max_steps=gc.max_steps, per_device_train_batch_size=gc.batch_size * GROUP,
        gradient_accumulation_steps=1, num_generations=GROUP, max_completion_length=gc.max_new_tokens,
        temperature=gc.temperature, top_p=gc.top_p, learning_rate=gc.lr, lr_scheduler_type="cosine", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=gc.max_grad_norm, beta=0.0, loss_type="dapo", scale_rewards="group",
        bf16=hardware.bf16_available("cpu"), use_cpu=True, logging_steps=1, save_strategy="no", report_to=[],
        disable_tqdm=True, seed=gc.seed, gradient_checkpointing=False,
    )
    lora = LoraConfig(r=config.train.lora.r, lora_alpha=config.train.lora.alpha, lora_dropout=config.train.lora.dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    set_seed(gc.seed)  # as adhere's loop does just before building the model, so lora_A starts the same
    timer, clock = step_timer(), Clock()
    trainer = GRPOTrainer(model=model, reward_funcs=review_reward, args=args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=lora, callbacks=[timer])
    adapter_start = adapter_checksum(trainer.model)
    trainer._generate = clock.wrap(trainer._generate)
    started = time.perf_counter()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    return {"train_s": timer.ends[-1] - timer.start, "generate_s": clock.seconds, "steps": len(timer.ends),
            "rewards": [h["reward"] for h in logs], "lengths": [h.get("completions/mean_length", 0.0) for h in logs],
            "zero_std": [h.get("frac_reward_zero_std", 0.0) for h in logs], "bf16": args.bf16, "rss_gib": peak_rss_gib(),
            "adapter_start": adapter_start, "run_s": time.perf_counter() - started}


# ---------------------------------------------------------------- the parent: run both, compare, write the table


def table(a: dict, t: dict) -> str:
    """The markdown table, adhere beside TRL, with ratios."""
    sec, num = (lambda v: f"{v:.1f} s"), (lambda v: f"{v:.3f}")
    mean = lambda values: sum(values) / len(values) if values else 0.0  # noqa: E731
    return "\n".join([
        "| | adhere grpo | TRL GRPOTrainer | adhere / TRL |",
        "|---|---|---|---|",
        row("steps per hour", 3600 * a["steps"] / a["train_s"], 3600 * t["steps"] / t["train_s"], lambda v: f"{v:.0f}"),
        row("wall time per step", a["train_s"] / a["steps"], t["train_s"] / t["steps"], sec),
        row("of which generation", a["generate_s"] / a["steps"], t["generate_s"] / t["steps"], sec),
        row("of which the rest (scoring, forward, backward, optimizer)", (a["train_s"] - a["generate_s"]) / a["steps"],
            (t["train_s"] - t["generate_s"]) / t["steps"], sec),
        row("mean answer length (tokens)", mean(a["lengths"]), mean(t["lengths"]), lambda v: f"{v:.1f}"),
        row("peak memory (RSS of the process, end of training)", a["rss_gib"], t["rss_gib"], lambda v: f"{v:.2f} GiB"),
        row("whole process, wall time (imports, load, train)", a["wall_s"], t["wall_s"], sec),
        f"| machine load average (1 min) before; after | {a['load'][0]:.1f}; {a['load'][1]:.1f} | {t['load'][0]:.1f}; {t['load'][1]:.1f} | - |",
        row("mean reward, first step", a["rewards"][0], t["rewards"][0], num, ratio=False),
        row("mean reward, last step", a["rewards"][-1], t["rewards"][-1], num, ratio=False),
        row("share of groups whose answers all score the same", mean(a["zero_std"]), mean(t["zero_std"]), num, ratio=False),
    ])


def compare(args: argparse.Namespace, config_path: Path) -> str:
    results = {}
    for which in ("adhere", "trl"):
        print(f"training with {which} ...", flush=True)
        results[which] = run_child(__file__, which, config_path)
        print(f"  {results[which]['train_s']:.1f} s of training steps ({results[which]['generate_s']:.1f} s generating)", flush=True)
    a, t = results["adhere"], results["trl"]
    speed = (a["steps"] / a["train_s"]) / (t["steps"] / t["train_s"])
    memory = a["rss_gib"] / t["rss_gib"]
    notes = [
        f"- steps per hour: adhere {speed:.2f}x TRL's (target >= 1.5x): {'met' if speed >= 1.5 else 'NOT met'}.",
        f"- peak memory: adhere {memory:.2f}x TRL's.",
        (f"- work: each took {args.steps} steps of {args.prompts} prompts x {GROUP} answers (up to {args.max_new_tokens} tokens), "
         f"the same {args.steps * args.prompts} prompts, one epoch. The answers differ (each samples its own), so the "
         "tokens generated and trained differ too: compare the mean answer length before the times."),
        (f"- LoRA start: sum |lora_A| adhere {a['adapter_start']:.4f}, TRL {t['adapter_start']:.4f}; bf16 autocast in "
         f"training: adhere {a['bf16']}, TRL {t['bf16']}."),
    ]
    return "\n".join([table(a, t), "", *notes])


def write_docs(report: str, args: argparse.Namespace, seconds: float) -> None:
    command = " ".join([".venv/bin/python bench/grpo_bench.py", *sys.argv[1:]])
    intro = (
        f"`{command}` on {datetime.date.today().isoformat()}, {seconds / 60:.1f} minutes: {machine_line('trl', 'peft')}. "
        f"SmolLM2-135M-Instruct (embedded), a new LoRA adapter r={LORA['r']} alpha {LORA['alpha']} on every linear layer "
        f"but the head, {args.steps} steps of {args.prompts} code-review prompts x {GROUP} answers, lr {LR}, beta 0, DAPO "
        f"loss, reward item F1 (suggestions) + 0.5 x JSON parses, "
        f"{'bf16 autocast' if precision() == 'bfloat16' else 'float32'} training. Each trainer runs in its own process."
    )
    write_block(HEADING, begin_marker(precision()), END, f"{intro}\n\n{report}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps for each trainer")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step (each answered 4 times)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--no-docs", action="store_true", help="print the table only; leave docs/benchmarks.md alone")
    parser.add_argument("--only", choices=["adhere", "trl"], help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        if args.only == "adhere":
            result = child_adhere(args.config)
            result["adapter_start"] = adhere_adapter_start(args.config, "grpo")  # after the peak memory was read
        else:
            result = child_trl(args.config)
        args.out.write_text(json.dumps(result))
        return
    from adhere.models.embedded import ensure_embedded_model

    started = time.perf_counter()
    print(f"{cpu_name()}, {os.cpu_count()} cores; training in {precision()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as tmp:
        report = compare(args, write_project(Path(tmp), ensure_embedded_model(), args))
    seconds = time.perf_counter() - started
    print(report)
    print(f"bench took {seconds / 60:.1f} minutes")
    if not args.no_docs:
        write_docs(report, args, seconds)


if __name__ == "__main__":
    main()
