"""Benchmark of the train stage: `adhere train` and TRL's `SFTTrainer` side by side on the same work.

    .venv/bin/python bench/train_bench.py                       # 12 steps of batch 8, about 8 minutes on 2 cores
    .venv/bin/python bench/train_bench.py --steps 4 --no-docs   # a quick look, about 3 minutes
    .venv/bin/python bench/train_bench.py --trl-batches adhere  # TRL gets adhere's batches, in adhere's order

Both trainers start from the embedded SmolLM2-135M-Instruct folder (the same float32 weights) and
train LoRA r=16, alpha 32, no dropout, on every linear layer but the output head, from the same
seeded adapter initialisation (checked), with the same batch, accumulation, max length, learning
rate, cosine schedule without warmup (HF's warmup starts at lr 0 and adhere's at lr/warmup, so only
no warmup gives one schedule), AdamW, clipping and bf16 autocast, and the loss on the answer only.
The data is generated: code-review prompts (a Python function with planted bugs) answered in JSON,
prompts and answers each about 30-300 tokens. The train split is exactly one epoch by default
(steps x batch x accumulation rows), so both see the same examples and train the same tokens;
adhere in its length-grouped batches, TRL in its own random ones unless `--trl-batches adhere`.

Each trainer runs in its own process (`--only`, writing one JSON file), so each peak memory
(ru_maxrss) is its own. Throughput is adhere-masked trained tokens over the time of the training
steps; eval loss for both comes from one evaluator, `adhere.train.loop.evaluate` (mean loss per
trained token under adhere's mask, bf16 autocast), run on each trained model; TRL's own
`trainer.evaluate()` figure is shown beside it. The parent measures the machine's bf16 matmul rate
for the model FLOP utilization, prints a table and writes it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from children import adapter_checksum, adhere_adapter_start, row, run_child
from docs_block import machine_line, write_block

HEADING = "## Training: adhere vs TRL SFTTrainer (`bench/train_bench.py`)"
# One block per kind of run (bf16 on a CPU with AVX-512 BF16, float32 on one without, CUDA), so each
# machine's figures stay beside the others': a re-run replaces only its own block.
END = "<!-- to here -->"


def begin_marker(precision: str) -> str:
    return f"<!-- train_bench.py writes from here ({precision}) -->"


def precision() -> str:
    """The dtype both trainers compute in: bf16 autocast where this CPU runs it fast, else float32."""
    from adhere import hardware

    return "bfloat16" if hardware.bf16_available("cpu") else "float32"


LORA = {"r": 16, "alpha": 32, "dropout": 0.0}
LR, MAX_LENGTH, SEED = 2e-4, 1024, 0

# ---------------------------------------------------------------- data: code reviews answered in JSON

CLEAN = ["{a} = {b} + {n}", "{a} = {b} * {n}", "total += {a}", "result.append({a})", "{a} = str({b}).strip()",
         "if {a} > {n}:\n        {b} = {n}", "for item in {b}:\n        total += item", "print({a}, {b})"]
BUGS = {  # rule: (code, severity, fix) -- the answer is a function of the code, so it can be learned
    "none-comparison": ("if {a} == None:\n        return {n}", "low", "compare with `is None`"),
    "bare-except": ("try:\n        {a} = int({b})\n    except:\n        pass", "high", "catch ValueError, not everything"),
    "unclosed-file": ("f = open('{b}.txt')\n    {a} = f.read()", "medium", "use `with open(...)` so the file is closed"),
    "shadowed-builtin": ("list = [{a}, {b}]", "medium", "rename `list`; it hides the builtin"),
    "eval-input": ("{a} = eval({b})", "high", "never eval input; parse it with json.loads or int"),
    "string-concat-loop": ("for x in {b}:\n        {a} = {a} + str(x)", "low", "collect parts and use ''.join"),
}
NAMES = ["count", "value", "items", "rows", "limit", "offset", "name", "user", "payload", "score", "token", "batch"]


def review(rng: random.Random) -> dict:
    """One record: a function of 2-17 statements, 0-6 planted bugs, and the review as JSON.

    Counts are skewed short (statements 2 + 16 u^2, mostly 0-2 bugs), so prompts run about 50-300
    tokens and answers 30-280: varied lengths, and short enough for TRL to finish in a few minutes.
    """
    statements, issues = [], []
    bugs = rng.sample(sorted(BUGS), k=min(len(BUGS), rng.choice([0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 6])))
    clean = 2 + int(16 * rng.random() ** 2)
    slots = sorted(rng.sample(range(clean + len(bugs)), k=len(bugs)))
    line = 2  # line 1 is the def
    for i in range(clean + len(bugs)):
        fill = {"a": rng.choice(NAMES), "b": rng.choice(NAMES), "n": rng.randint(0, 99)}
        if slots and i == slots[0]:
            slots.pop(0)
            rule = bugs[len(issues)]
            code, severity, fix = BUGS[rule]
            issues.append({"line": line, "rule": rule, "severity": severity, "fix": fix.format(**fill)})
        else:
            code = rng.choice(CLEAN)
        text = "    " + code.format(**fill)
        statements.append(text)
        line += text.count("\n") + 1
    name = f"{rng.choice(['load', 'parse', 'merge', 'score', 'clean'])}_{rng.choice(NAMES)}"
    source = f"def {name}({', '.join(rng.sample(NAMES, 2))}):\n" + "\n".join(statements) + "\n    return result"
    verdict = "request_changes" if any(i["severity"] != "low" for i in issues) else "approve"
    answer = {"verdict": verdict, "issues": issues,
              "summary": f"{len(issues)} issue(s) in `{name}`" + (": " + ", ".join(i["rule"] for i in issues) if issues else ".")}
    prompt = f"Review this function. Answer in JSON with verdict, issues (line, rule, severity, fix) and summary.\n\n```python\n{source}\n```"
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": json.dumps(answer)}], "meta": {}}


def write_project(folder: Path, model: Path, args: argparse.Namespace) -> Path:
    """adhere.yaml and runs/bench/data/{train,valid}.jsonl, as `adhere data` would leave them."""
    rng = random.Random(args.seed)
    data = folder / "runs" / "bench" / "data"
    data.mkdir(parents=True)
    for split, rows in (("train", args.rows), ("valid", args.eval_rows)):
        with (data / f"{split}.jsonl").open("w") as handle:
            for _ in range(rows):
                handle.write(json.dumps(review(rng)) + "\n")
    train = {"method": "lora", "lora": {**LORA, "target_modules": []}, "lr": LR, "max_steps": args.steps,
             "batch_size": args.batch_size, "grad_accum": args.grad_accum, "max_length": MAX_LENGTH, "warmup_ratio": 0.0,
             "schedule": "cosine", "weight_decay": 0.0, "max_grad_norm": 1.0, "precision": "auto", "seed": SEED, "log_every": 1}
    config = {"name": "bench", "model": {"base": str(model)}, "train": train}
    (folder / "adhere.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    return folder / "adhere.yaml"


# ---------------------------------------------------------------- the two trainers, each in its own process


def child_adhere(config_path: Path) -> dict:
    """`adhere train` through its Python API; the training-step time is the sum of metrics.jsonl's step_s."""
    from adhere.config import load_config
    from adhere.train import run

    run_dir = run(load_config(config_path))
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    # step_s covers collate, forward, backward, clipping and the optimizer step, not the final evaluation
    return {"train_s": sum(s["step_s"] for s in steps), "first_step_s": steps[0]["step_s"], "steps": len(steps),
            "final_train_loss": summary["final_train_loss"], "eval_loss": summary["final_valid_loss"],
            "trained_tokens_logged": summary["trained_tokens"], "bf16": summary["bf16"]}


def child_trl(config_path: Path, same_batches: bool = False) -> dict:
    """TRL's SFTTrainer on the same records as prompt-completion pairs, with completion_only_loss.

    With `same_batches`, TRL gets adhere's micro-batches in adhere's order (records reordered, sequential
    sampler), so the two runs differ only in the trainers; by default TRL samples its own random batches.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    from adhere import hardware
    from adhere.config import load_config
    from adhere.train.batches import build_examples, read_records
    from functools import partial

    from adhere.train.batches import collate
    from adhere.train.loop import SFT_TERMS, TokenLoss, evaluate, sft_count

    config = load_config(config_path)
    tc, data = config.train, config.stage_dir("data")
    tokenizer = AutoTokenizer.from_pretrained(config.model.base)
    model = AutoModelForCausalLM.from_pretrained(config.model.base, dtype=torch.float32)
    records = {split: read_records(data / f"{split}.jsonl") for split in ("train", "valid")}
    if same_batches:
        records["train"] = [records["train"][i] for batch in adhere_order(config_path) for i in batch]
    # SmolLM2's template has no {% generation %} markers and TRL 1.16 ships no training template for it, so
    # assistant_only_loss cannot be used; prompt-completion pairs with completion_only_loss train the answer.
    pairs = {split: Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
             for split, rows in records.items()}
    args = SFTConfig(
        output_dir=str(config_path.parent / "trl"), max_steps=tc.max_steps, per_device_train_batch_size=tc.batch_size,
        per_device_eval_batch_size=tc.batch_size, gradient_accumulation_steps=tc.grad_accum, learning_rate=tc.lr,
        lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=tc.max_grad_norm,
        bf16=hardware.bf16_available("cpu"), use_cpu=True, max_length=tc.max_length, packing=False,
        completion_only_loss=True, gradient_checkpointing=False,  # SFTConfig defaults to True; adhere's is off
        logging_steps=1, eval_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True, seed=tc.seed,
        train_sampling_strategy="sequential" if same_batches else "random",
    )
    lora = LoraConfig(r=tc.lora.r, lora_alpha=tc.lora.alpha, lora_dropout=tc.lora.dropout, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    set_seed(tc.seed)  # as adhere's loop does just before building the model, so lora_A starts the same
    timer = step_timer()
    trainer = SFTTrainer(model=model, args=args, train_dataset=pairs["train"], processing_class=tokenizer,
                         peft_config=lora, callbacks=[timer])
    adapter_start = adapter_checksum(trainer.model)
    mask_check = compare_masks(trainer.train_dataset, build_examples(records["train"], tokenizer, tc.max_length, "train"))
    counter = BatchCounter(trainer.data_collator)
    trainer.data_collator = counter
    trainer.train()
    counter.active = False
    trl_eval = trainer.evaluate(pairs["valid"])["eval_loss"]
    eval_ex = build_examples(records["valid"], tokenizer, tc.max_length, "valid")
    shared_eval = evaluate(TokenLoss(trainer.model), eval_ex, tc.batch_size, partial(collate, pad_id=tokenizer.pad_token_id),
                           sft_count, SFT_TERMS, trainer.accelerator)["loss"]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"train_s": timer.ends[-1] - timer.start, "first_step_s": timer.ends[0] - timer.start, "steps": len(timer.ends),
            "final_train_loss": losses[-1], "eval_loss": shared_eval, "trl_eval_loss": trl_eval, "bf16": args.bf16,
            "adapter_start": adapter_start, "mask_check": mask_check, "batches": counter.batches, "optim": getattr(args.optim, "value", str(args.optim))}


def compare_masks(prepared, examples) -> dict:
    """How TRL's tokens and labels differ from adhere's render of the same records (in the same order)."""
    same_ids = same_labels = only_newline = 0
    for prepared_row, ex in zip(prepared, examples):
        same_ids += prepared_row["input_ids"] == ex.input_ids
        extra = [i for i, (a, b) in enumerate(zip(prepared_row["labels"], ex.labels)) if a != b]
        same_labels += not extra
        # TRL's completion is the rest of the rendering: "<answer><|im_end|>\n", so it also trains the "\n"
        only_newline += extra == [len(ex.labels) - 1] and ex.labels[-2] != -100
    return {"examples": len(examples), "same_input_ids": same_ids, "same_labels": same_labels,
            "labels_differ_only_by_final_newline": only_newline}


class BatchCounter:
    """TRL's collator, recording each training micro-batch's rows: (tokens, trained tokens by TRL's mask)."""

    def __init__(self, inner):
        self.inner, self.active, self.batches = inner, True, []

    def __call__(self, examples):
        if self.active:
            self.batches.append([(len(e["input_ids"]), sum(t != -100 for t in e["labels"][1:])) for e in examples])
        return self.inner(examples)


def step_timer():
    """A TrainerCallback noting the time training starts and each optimizer step ends."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.start, self.ends = 0.0, []

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    return StepTimer()


# ---------------------------------------------------------------- work done: tokens and model FLOPs


def adhere_order(config_path: Path) -> list[list[int]]:
    """The train rows of each micro-batch adhere's loop consumes (one process), from its seeded order."""
    from adhere.config import load_config
    from adhere.models import load_tokenizer
    from adhere.train.batches import build_examples, epoch_batches, read_records

    config = load_config(config_path)
    tc, path = config.train, config.stage_dir("data") / "train.jsonl"
    examples = build_examples(read_records(path), load_tokenizer(config.model), tc.max_length, str(path))
    assert len(examples) == len(read_records(path)), "every generated record trains something"
    batches, epoch = [], 0
    while len(batches) < tc.max_steps * tc.grad_accum:  # as loop.micro_batches does
        batches += epoch_batches(examples, tc.batch_size, tc.seed, epoch)
        epoch += 1
    return batches[: tc.max_steps * tc.grad_accum]


def adhere_batches(config_path: Path) -> list[list[tuple[int, int]]]:
    """The micro-batches adhere's loop consumed: (tokens, trained tokens) per row."""
    from adhere.config import load_config
    from adhere.models import load_tokenizer
    from adhere.models.masking import render

    config = load_config(config_path)
    records = [json.loads(line) for line in (config.stage_dir("data") / "train.jsonl").open()]
    tokenizer, n = load_tokenizer(config.model), config.train.max_length
    rendered = [render(tokenizer, r["messages"], max_length=n) for r in records]
    return [[(len(rendered[i].input_ids), rendered[i].trained_tokens) for i in batch] for batch in adhere_order(config_path)]


def work(batches: list[list[tuple[int, int]]], shape: dict, trained_offset: int = 0) -> dict:
    """Tokens, trained tokens (adhere's mask: minus `trained_offset` per row), padded slots and model FLOPs.

    Model FLOPs per the LoRA step, counting what the objective needs, not what an implementation spends:
    4 x frozen linear params x tokens (forward, and the backward to activations; frozen weights need no
    weight gradient), 6 x adapter params x tokens, 4 x head params x trained tokens (logits are needed only
    where a token trains; the head is tied to the frozen embedding), and causal attention
    6 x layers x hidden x seq^2 per sequence (QK^T and AV, half of them masked, backward twice the forward).
    Padding is not counted: it is work the model does not need.
    """
    rows = [row for batch in batches for row in batch]
    tokens, sum_sq = sum(n for n, _ in rows), sum(n * n for n, _ in rows)
    trained = sum(t - trained_offset for _, t in rows)
    padded = sum(max(n for n, _ in batch) * len(batch) for batch in batches)
    flops = (4 * shape["frozen"] * tokens + 6 * shape["adapter"] * tokens + 4 * shape["head"] * trained
             + 6 * shape["layers"] * shape["hidden"] * sum_sq)
    return {"examples": len(rows), "tokens": tokens, "trained_tokens": trained, "padded_tokens": padded, "model_flops": flops}


def model_shape(folder: Path, r: int) -> dict:
    """Parameter counts of a Llama-style model (SmolLM2) from its config.json: frozen linears, LoRA adapters, head."""
    c = json.loads((folder / "config.json").read_text())
    h, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    kv = c["num_key_value_heads"] * c.get("head_dim", h // c["num_attention_heads"])
    linears = [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]  # q k v o gate up down
    return {"frozen": layers * sum(a * b for a, b in linears), "adapter": layers * sum(r * (a + b) for a, b in linears),
            "head": h * c["vocab_size"], "layers": layers, "hidden": h}


def matmul_rate(dtype_name: str, n: int = 2048, seconds: float = 3.0) -> float:
    """Measured GFLOP/s of an n x n by n x n matrix multiply (2 n^3 FLOPs) on this process's threads."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


# ---------------------------------------------------------------- the parent: run both, compare, write the table


def table(a: dict, t: dict, peak: float) -> str:
    """The markdown table, adhere beside TRL, with ratios."""
    gib, sec = (lambda v: f"{v:.2f} GiB"), (lambda v: f"{v:.1f} s")
    lines = [
        "| | adhere train | TRL SFTTrainer | adhere / TRL |",
        "|---|---|---|---|",
        row("trained tokens / s (training steps)", a["tps"], t["tps"], lambda v: f"{v:,.1f}"),
        row("training steps, wall time", a["train_s"], t["train_s"], sec),
        row("first step (warm-up)", a["first_step_s"], t["first_step_s"], sec),
        row("whole process, wall time (imports, load, tokenize, train, eval)", a["wall_s"], t["wall_s"], sec),
        row("peak memory (RSS of the process)", a["rss_gib"], t["rss_gib"], gib),
        row("final eval loss (one evaluator: adhere's mask, per trained token)", a["eval_loss"], t["eval_loss"], lambda v: f"{v:.4f}"),
        f"| eval loss by TRL's `trainer.evaluate()` (mean of batch means, trains the final \\n too) | - | {t['trl_eval_loss']:.4f} | - |",
        row("final train loss (last step, each trainer's own mask)", a["final_train_loss"], t["final_train_loss"], lambda v: f"{v:.4f}"),
        row("tokens computed per step, padding included", a["padded_tokens"] / a["steps"], t["padded_tokens"] / t["steps"], lambda v: f"{v:,.0f}"),
        row("padding share of computed tokens", a["pad_share"], t["pad_share"], lambda v: f"{v:.1%}"),
        row(f"model FLOP utilization (of {peak:.0f} GFLOP/s measured {precision()} matmul)", a["mfu"], t["mfu"], lambda v: f"{v:.1%}"),
    ]
    return "\n".join(lines)


def verdict(a: dict, t: dict) -> list[str]:
    """The issue's targets, checked against the numbers, said plainly."""
    speed, memory = a["tps"] / t["tps"], a["rss_gib"] / t["rss_gib"]
    loss = (a["eval_loss"] - t["eval_loss"]) / t["eval_loss"]
    return [
        f"- throughput: adhere {speed:.2f}x TRL's (target >= 1.5x): {'met' if speed >= 1.5 else 'NOT met'}.",
        f"- peak memory: adhere {memory:.2f}x TRL's (target <= 1.0x): {'met' if memory <= 1.0 else 'NOT met'}.",
        f"- final eval loss: adhere {loss:+.2%} from TRL's (target within 2%): {'met' if abs(loss) <= 0.02 else 'NOT met'}.",
    ]


def compare(args: argparse.Namespace, config_path: Path, model: Path) -> tuple[str, dict, dict]:
    """Run both trainers and put their numbers on the same footing; returns (report, adhere, trl)."""
    peak = matmul_rate(precision())  # MFU against the rate of the dtype the trainers compute in
    print(f"{precision()} matmul 2048^3: {peak:.0f} GFLOP/s", flush=True)
    results = {}
    for which, child in (("adhere", "adhere"), ("trl", "trl-same" if args.trl_batches == "adhere" else "trl")):
        print(f"training with {child} ...", flush=True)
        results[which] = run_child(__file__, child, config_path)
        print(f"  {results[which]['train_s']:.1f} s of training steps, {results[which]['wall_s']:.1f} s in all", flush=True)
    a, t = results["adhere"], results["trl"]
    shape = model_shape(model, LORA["r"])
    check = t["mask_check"]
    newline = check["labels_differ_only_by_final_newline"] == check["examples"]
    a.update(work(adhere_batches(config_path), shape))
    t.update(work(t.pop("batches"), shape, trained_offset=1 if newline else 0))
    for r in (a, t):  # trained tokens counted by adhere's mask for both, over the examples each consumed
        r["tps"] = r["trained_tokens"] / r["train_s"]
        r["pad_share"] = 1 - r["tokens"] / r["padded_tokens"]
        r["mfu"] = r["model_flops"] / r["train_s"] / (peak * 1e9)
    order = "adhere's, in adhere's order" if args.trl_batches == "adhere" else "its own (random sampler)"
    notes = [
        (f"- work: adhere consumed {a['examples']} examples ({a['tokens']:,} tokens, {a['trained_tokens']:,} trained), "
         f"TRL {t['examples']} ({t['tokens']:,} tokens, {t['trained_tokens']:,} trained by adhere's mask; "
         f"adhere's own count in summary.json: {a['trained_tokens_logged']:,})."),
        (f"- loss mask: of {check['examples']} train examples, TRL's input ids equal adhere's for {check['same_input_ids']}, "
         f"labels equal for {check['same_labels']}, and differ only by TRL also training the \"\\n\" after "
         f"`<|im_end|>` for {check['labels_differ_only_by_final_newline']}."),
        (f"- LoRA start: sum |lora_A| adhere {a['adapter_start']:.4f}, TRL {t['adapter_start']:.4f}; "
         f"bf16 autocast: adhere {a['bf16']}, TRL {t['bf16']}; optimizer: TRL {t['optim']}, adhere torch.optim.AdamW; "
         f"TRL batches: {order}."),
        (f"- model FLOPs per run: adhere {a['model_flops'] / 1e12:.2f} TFLOP, TRL {t['model_flops'] / 1e12:.2f} TFLOP "
         "(formula in `work()`; padding and TRL's logits for untrained positions are not counted)."),
    ]
    return "\n".join([table(a, t, peak), "", *verdict(a, t), "", *notes]), a, t


def write_docs(report: str, args: argparse.Namespace) -> None:
    """Put the report under HEADING in docs/benchmarks.md, replacing an earlier run's section."""
    command = " ".join([".venv/bin/python bench/train_bench.py", *sys.argv[1:]])
    intro = (
        f"`{command}` on {datetime.date.today().isoformat()}: {machine_line('trl')}. "
        f"SmolLM2-135M-Instruct (embedded), LoRA r={LORA['r']} alpha {LORA['alpha']} dropout {LORA['dropout']} on every linear "
        f"layer but the head, {args.steps} steps of batch {args.batch_size} x accumulation {args.grad_accum}, lr {LR} cosine "
        f"without warmup, max length {MAX_LENGTH}, {'bf16 autocast' if precision() == 'bfloat16' else 'float32 (no fast bf16 on this CPU)'}, loss on the answer only; {args.rows} generated code-review "
        f"examples (one epoch), {args.eval_rows} for eval. Each trainer runs in its own process."
    )
    write_block(HEADING, begin_marker(precision()), END, f"{intro}\n\n{report}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps for each trainer")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--rows", type=int, default=None, help="train examples; default steps x batch x accumulation (one epoch)")
    parser.add_argument("--eval-rows", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--no-docs", action="store_true", help="print the table only; leave docs/benchmarks.md alone")
    parser.add_argument("--trl-batches", choices=["own", "adhere"], default="own",
                        help="'own': TRL's random batches (its default); 'adhere': adhere's batches, in adhere's order")
    parser.add_argument("--only", choices=["adhere", "trl", "trl-same"], help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        result = child_adhere(args.config) if args.only == "adhere" else child_trl(args.config, args.only == "trl-same")
        result["rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        if args.only == "adhere":
            result["adapter_start"] = adhere_adapter_start(args.config, "train")  # after the peak memory was read
        args.out.write_text(json.dumps(result))
        return
    args.rows = args.rows or args.steps * args.batch_size * args.grad_accum
    from adhere.models.embedded import ensure_embedded_model

    model = ensure_embedded_model()
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        config_path = write_project(Path(tmp), model, args)
        report, _, _ = compare(args, config_path, model)
    print(report)
    if not args.no_docs:
        write_docs(report, args)


if __name__ == "__main__":
    main()
