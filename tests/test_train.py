"""Step 4: the training loop on a tiny model: loss normalisation, LoRA and full, outputs, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import adhere.train
from adhere.config import load_config
from adhere.errors import UserError

ANSWERS = ["Four.", "The capital of France is Paris, a large city.", "Yes", "def add(a, b):\n    return a + b"]
QUESTIONS = ["What is 2+2?", "Name the capital of France.", "Is water wet?", "Write an add function in Python."]


def records(n: int) -> list[dict[str, Any]]:
    return [
        {"messages": [{"role": "user", "content": QUESTIONS[i % 4]}, {"role": "assistant", "content": ANSWERS[i % 4]}], "meta": {}}
        for i in range(n)
    ]


def make_project(tmp_path: Path, tiny_dir: Path, train_yaml: str, n_train: int = 4, n_valid: int = 2) -> Path:
    """adhere.yaml and the data stage's train.jsonl and valid.jsonl (eval.jsonl is for `adhere eval`, not training)."""
    data = tmp_path / "runs" / "p" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records(n_train)))
    (data / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records(n_valid)))
    path = tmp_path / "adhere.yaml"
    path.write_text(f"name: p\nmodel: {{base: {tiny_dir}}}\ntrain:\n{train_yaml}")
    return path


def trained_weights(run_dir: Path, method: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    name = "adapter/adapter_model.safetensors" if method == "lora" else "model/model.safetensors"
    return load_file(run_dir / name)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_batch_1_x_accumulation_4_equals_batch_4_x_1(tmp_path: Path, tiny_dir: Path, optimizer: str, monkeypatch) -> None:
    if optimizer == "sgd":  # plain SGD moves weights by the gradient itself, so any normalisation error shows
        monkeypatch.setattr(torch.optim, "AdamW", lambda params, lr, weight_decay: torch.optim.SGD(params, lr=lr))
    common = "  method: full\n  max_steps: 1\n  lr: 0.01\n  warmup_ratio: 0\n  precision: fp32\n"
    results = []
    for batch, accum in ((1, 4), (4, 1)):
        folder = tmp_path / f"b{batch}"
        folder.mkdir()
        path = make_project(folder, tiny_dir, common + f"  batch_size: {batch}\n  grad_accum: {accum}\n")
        results.append(trained_weights(adhere.train.run(load_config(path)), "full"))
    before = trained_weights_from_folder(tiny_dir)
    moved = [k for k in before if not torch.equal(before[k], results[0][k])]
    assert moved  # the step changed the weights
    # Adam divides by |gradient|, so float noise on near-zero gradients moves a weight by up to ~3e-6;
    # a real normalisation error moves weights by the order of lr (1e-2).
    atol = 1e-6 if optimizer == "sgd" else 1e-5
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-5, atol=atol)


def trained_weights_from_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_lora_run_writes_a_peft_adapter_and_metrics(tmp_path: Path, tiny_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path = make_project(tmp_path, tiny_dir, "  max_steps: 6\n  batch_size: 2\n  lr: 0.01\n  eval_every: 3\n  lora: {r: 4, alpha: 8}\n", n_train=8)
    run_dir = adhere.train.run(load_config(path))
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6] and "valid_loss" in metrics[2]
    assert metrics[-1]["trained_tokens"] > 0 and metrics[-1]["eta_s"] == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["final_valid_loss"] > 0 and summary["valid_examples"] == 2
    assert (run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    adapter = run_dir / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "chat_template.jinja").is_file() or "chat_template" in (adapter / "tokenizer_config.json").read_text()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), adapter)
    assert any("lora_A" in name for name, _ in model.named_parameters())
    lineage = json.loads((run_dir / "lineage.json").read_text())
    assert set(lineage["inputs"]) == {"train", "valid"}


def test_lora_layers_adapts_only_the_top_layers(tmp_path: Path, tiny_dir: Path) -> None:
    from transformers import AutoConfig

    total = AutoConfig.from_pretrained(tiny_dir).num_hidden_layers
    path = make_project(tmp_path, tiny_dir, "  max_steps: 1\n  lora: {r: 4, layers: 1}\n")
    adapted = {int(key.split(".layers.")[1].split(".")[0]) for key in trained_weights(adhere.train.run(load_config(path)), "lora")}
    assert adapted == {total - 1}
    path = make_project(tmp_path, tiny_dir, f"  max_steps: 1\n  lora: {{layers: {total + 1}}}\n")
    with pytest.raises(UserError, match=f"train.lora.layers: .* has {total} layers, got {total + 1}"):
        adhere.train.run(load_config(path))


def test_training_lowers_the_loss(tmp_path: Path, tiny_dir: Path) -> None:
    path = make_project(tmp_path, tiny_dir, "  method: full\n  max_steps: 30\n  batch_size: 4\n  lr: 0.01\n  precision: fp32\n", n_train=8)
    run_dir = adhere.train.run(load_config(path))
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # Pinned: the seeded tiny model starts near ln(vocab size), and the same seed gives the same curve.
    assert losses[0] == pytest.approx(5.95164, abs=1e-4)
    assert sum(losses[-5:]) / 5 < 0.55 * losses[0]


def test_bad_input_fails_before_training(tmp_path: Path, tiny_dir: Path) -> None:
    path = make_project(tmp_path, tiny_dir, "  max_steps: 1\n", n_train=0)
    with pytest.raises(UserError, match="train.jsonl: it is empty"):
        adhere.train.run(load_config(path))
    path = make_project(tmp_path, tiny_dir, "  max_steps: 1\n  lora: {target_modules: [q_proj, c_attn]}\n")
    with pytest.raises(UserError, match=r"has no linear layers named \['c_attn'\]"):
        adhere.train.run(load_config(path))
    path = make_project(tmp_path, tiny_dir, "  max_steps: 1\n  max_length: 8\n")
    with pytest.raises(UserError, match="none of its 4 examples has a token to train"):
        adhere.train.run(load_config(path))


def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(tmp_path: Path, tiny_dir: Path) -> None:
    """A run with validation and early stopping, killed after its best step: the resumed run stops where the
    uninterrupted one stops and writes the same (best) weights, so the best-so-far state is in the checkpoint."""
    settings = ("  max_steps: 120\n  batch_size: 2\n  lr: 0.01\n  lora: {r: 4, dropout: 0.1}\n  save_every: 10\n  keep_last: 2\n"
                "  eval_every: 5\n  early_stopping_patience: 8\n")
    (tmp_path / "straight").mkdir()
    straight = make_project(tmp_path / "straight", tiny_dir, settings, n_train=12, n_valid=0)
    write_valid_with_other_answers(tmp_path / "straight")
    straight_dir = adhere.train.run(load_config(straight))
    expected = trained_weights(straight_dir, "lora")
    summary = json.loads((straight_dir / "summary.json").read_text())
    # The premise (pinned for this seed): the best step comes before the checkpoint the kill waits for, and the
    # run stops early well after it, so a resume that forgot the best would stop elsewhere with other weights.
    assert summary["stopped_early"] and summary["best_step"] < 40 < summary["steps"] - 20, summary

    (tmp_path / "killed").mkdir()
    path = make_project(tmp_path / "killed", tiny_dir, settings, n_train=12, n_valid=0)
    write_valid_with_other_answers(tmp_path / "killed")
    checkpoint_dir = tmp_path / "killed" / "runs" / "p" / "train" / "checkpoints"
    kill_when(["train", str(path)], checkpoint_dir / "step-000040")
    done = sorted(p.name for p in checkpoint_dir.iterdir() if not p.name.startswith("."))
    assert done and done[-1] >= "step-000040"  # (a kill between rename and pruning may leave one extra)

    run_dir = adhere.train.run(load_config(path), resume=True)
    resumed = trained_weights(run_dir, "lora")
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=0)
    assert json.loads((run_dir / "summary.json").read_text())["best_step"] == summary["best_step"]
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, summary["steps"] + 1))  # no step twice, none missing
    assert 2 <= len([p for p in checkpoint_dir.iterdir() if not p.name.startswith(".")]) <= 3  # keep_last, and the best


def kill_when(command: list[str], checkpoint: Path) -> None:
    """Run `adhere COMMAND` in a process and SIGKILL it as soon as `checkpoint` exists, before it writes its weights."""
    import os
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-m", "adhere", *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (checkpoint.parent.parent / "adapter").exists(), "the run finished before it could be killed"


def write_valid_with_other_answers(folder: Path) -> None:
    """Validation rows that ask the training questions but answer them differently: memorising the
    training answers makes their loss fall, then climb."""
    answers = ["It is four, as 2+2=4.", "Paris.", "Water is wet, yes.", "def add(x, y): return x + y"]
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "meta": {}} for q, a in zip(QUESTIONS, answers)]
    (folder / "runs" / "p" / "data" / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_resume_refuses_a_finished_run_and_changed_settings(tmp_path: Path, tiny_dir: Path) -> None:
    path = make_project(tmp_path, tiny_dir, "  max_steps: 6\n  save_every: 2\n  lora: {r: 4}\n")
    run_dir = adhere.train.run(load_config(path))
    with pytest.raises(UserError, match=r"nothing to resume: the run in .* finished \(step 6, summary.json\)"):
        adhere.train.run(load_config(path), resume=True)
    (run_dir / "summary.json").unlink()  # as a run killed after its step-4 checkpoint leaves it
    for change, named in (("train.lora.r=8", "train.lora"), ("train.max_steps=3", "train.max_steps (6 -> 3)"),
                          ("train.lr=0.1", "train.lr"), ("train.schedule=linear", "train.schedule"),
                          ("train.warmup_ratio=0.5", "train.warmup_ratio"), ("train.epochs=9", "train.epochs")):
        with pytest.raises(UserError, match=f"cannot resume .*{named.replace('(', '[(]').replace(')', '[)]')}.* changed since the run began"):
            adhere.train.run(load_config(path, [change]), resume=True)
    data = tmp_path / "runs" / "p" / "data" / "train.jsonl"
    data.write_text(data.read_text() + json.dumps(records(1)[0]) + "\n")
    with pytest.raises(UserError, match="the training data .* changed since the run began"):
        adhere.train.run(load_config(path), resume=True)
    with pytest.raises(UserError, match="nothing to resume"):
        adhere.train.run(load_config(tmp_path / "adhere.yaml", ["workdir=elsewhere"]), resume=True)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_export_loads_without_adhere_and_matches_the_trained_model(tmp_path: Path, tiny_dir: Path, method: str) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adhere.train.export import run as export

    settings = f"  method: {method}\n  max_steps: 3\n  lr: 0.05\n  precision: fp32\n  lora: {{r: 4, dropout: 0}}\n"
    if method == "full":
        settings = settings.replace("  lora: {r: 4, dropout: 0}\n", "")
    config = load_config(make_project(tmp_path, tiny_dir, settings))
    run_dir = adhere.train.run(config)
    folder = export(config)
    exported = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if method == "lora":
        reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), run_dir / "adapter").eval()
    else:
        reference = AutoModelForCausalLM.from_pretrained(run_dir / "model").eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[1]}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        torch.testing.assert_close(exported(**ids).logits, reference(**ids).logits, rtol=1e-4, atol=1e-5)
        base = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()(**ids).logits
    assert not torch.allclose(base, exported(**ids).logits)  # training changed the model
    assert exported.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    card = (folder / "README.md").read_text()
    assert f"method: {method}" in card and "sha256" in card


def test_dry_run_estimate_counts_and_times_without_writing_a_run(tmp_path: Path, tiny_dir: Path) -> None:
    from adhere.train.estimate import estimate

    path = make_project(tmp_path, tiny_dir, "  epochs: 2\n  batch_size: 2\n  grad_accum: 2\n", n_train=10)
    facts = estimate(load_config(path))
    assert facts["examples"] == 10 and facts["steps_per_epoch"] == 3 and facts["total_steps"] == 6
    assert facts["trained_tokens_per_epoch"] < facts["tokens_per_epoch"]
    assert facts["seconds_per_step"] > 0 and facts["peak_memory_gib"] > 0
    assert not (tmp_path / "runs" / "p" / "train").exists()


def test_early_stopping_keeps_the_best_weights(tmp_path: Path, tiny_dir: Path) -> None:
    # A learning rate this high makes the validation loss climb after the first evaluations.
    settings = ("  method: full\n  max_steps: 60\n  lr: 0.2\n  warmup_ratio: 0\n  schedule: constant\n  eval_every: 2\n"
                "  early_stopping_patience: 2\n  precision: fp32\n  save_every: 2\n  keep_last: 100\n")
    path = make_project(tmp_path, tiny_dir, settings, n_train=8)
    run_dir = adhere.train.run(load_config(path))
    summary = json.loads((run_dir / "summary.json").read_text())
    evals = [json.loads(line)["valid_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "valid_loss" in line]
    assert summary["stopped_early"] and summary["steps"] < 60
    assert summary["best_valid_loss"] == pytest.approx(min(evals), abs=1e-4)
    assert summary["steps"] == summary["best_step"] + 2 * 2  # two evaluations without improvement
    # The weights written are the ones the best step's checkpoint holds, not the last step's.
    from safetensors.torch import load_file

    written = trained_weights(run_dir, "full")
    at_best = load_file(run_dir / "checkpoints" / f"step-{summary['best_step']:06d}" / "trainable.safetensors")
    last_saved = load_file(run_dir / "checkpoints" / f"step-{summary['steps'] - 2:06d}" / "trainable.safetensors")
    assert set(written) <= set(at_best)
    assert any(not torch.equal(at_best[k], last_saved[k]) for k in written)  # the best and later weights differ
    for key in written:
        torch.testing.assert_close(written[key], at_best[key], rtol=0, atol=0)
    with pytest.raises(UserError, match="early stopping needs evaluations: set train.eval_every"):
        load_config(path, ["train.eval_every=null"])


def test_validation_uses_the_valid_split_and_never_the_eval_split(tmp_path: Path, tiny_dir: Path) -> None:
    path = make_project(tmp_path, tiny_dir, "  max_steps: 2\n  eval_every: 1\n  lora: {r: 4}\n", n_valid=3)
    eval_file = tmp_path / "runs" / "p" / "data" / "eval.jsonl"
    eval_file.write_text("this is not JSON: training must not read the eval split\n")
    summary = json.loads((adhere.train.run(load_config(path)) / "summary.json").read_text())
    assert summary["valid_examples"] == 3 and summary["final_valid_loss"] > 0


def test_logged_learning_rate_is_the_one_each_step_used(tmp_path: Path, tiny_dir: Path) -> None:
    from adhere.train.loop import lr_lambda

    path = make_project(tmp_path, tiny_dir, "  max_steps: 10\n  lr: 0.01\n  warmup_ratio: 0.3\n  schedule: linear\n  lora: {r: 4}\n")
    run_dir = adhere.train.run(load_config(path))
    logged = [json.loads(line)["lr"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    factor = lr_lambda("linear", 3, 10)
    assert logged == pytest.approx([0.01 * factor(step) for step in range(10)])
    assert logged[0] == pytest.approx(0.01 / 3) and logged[2] == pytest.approx(0.01) and logged[-1] > 0


@pytest.mark.parametrize("family", ["gemma2", "granite", "cohere"])
def test_token_loss_uses_the_logits_the_model_produces(family: str) -> None:
    """Gemma-2 softcaps its logits, Granite divides them, Cohere scales them: the loss must see that."""
    import transformers

    from adhere.train.loop import TokenLoss

    common = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 64, "pad_token_id": 0}
    build = {
        "gemma2": lambda: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**common, final_logit_softcapping=0.5)),
        "granite": lambda: transformers.GraniteForCausalLM(transformers.GraniteConfig(**common, logits_scaling=4.0)),
        "cohere": lambda: transformers.CohereForCausalLM(transformers.CohereConfig(**common, logit_scale=0.25)),
    }
    torch.manual_seed(0)
    model = build[family]().eval()
    input_ids = torch.randint(1, 64, (2, 12))
    attention_mask = torch.ones_like(input_ids)
    targets = torch.full_like(input_ids, -100)
    targets[0, 5:9], targets[1, 2:11] = input_ids[0, 6:10], input_ids[1, 3:12]
    with torch.no_grad():
        ours = TokenLoss(model)(input_ids, attention_mask, targets)["loss"]
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        keep = targets != -100
        reference = torch.nn.functional.cross_entropy(logits[keep].float(), targets[keep], reduction="sum")
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_full_tuning_keeps_fp32_master_weights_over_bf16_loaded_ones(tmp_path: Path, tiny_dir: Path) -> None:
    """Loaded in bf16, a small update rounds away unless the trained weights are float32."""
    base = trained_weights_from_folder(tiny_dir)
    common = "  method: full\n  max_steps: 1\n  lr: 0.00001\n  warmup_ratio: 0\n  precision: fp32\n"
    runs = {}
    for precision in ("fp32", "pure_bf16"):
        (tmp_path / precision).mkdir()
        path = make_project(tmp_path / precision, tiny_dir, common.replace("fp32", precision))
        runs[precision] = adhere.train.run(load_config(path, ["model.dtype=bfloat16"]))
    master = trained_weights(runs["fp32"], "full")
    summary = json.loads((runs["fp32"] / "summary.json").read_text())
    assert summary["precision"] == {"compute": "fp32", "trainable_weights": ["float32"], "frozen_weights": []}
    # Adam moves each weight by about lr = 1e-5, under half a bf16 step for |w| > 0.005 (most of them):
    # in fp32 nearly every weight moves, in bf16 only the smallest ones do.
    name = "model.layers.0.mlp.up_proj.weight"
    as_bf16 = base[name].to(torch.bfloat16).float()
    moved = ((master[name] - as_bf16).abs() > 5e-6).float().mean()
    assert master[name].dtype == torch.float32 and moved > 0.9
    pure = trained_weights(runs["pure_bf16"], "full")
    pure_summary = json.loads((runs["pure_bf16"] / "summary.json").read_text())
    assert pure[name].dtype == torch.bfloat16 and pure_summary["precision"]["compute"] == "bf16"
    assert (pure[name].float() != as_bf16).float().mean() < 0.3  # pure bf16, as asked: most updates rounded away


def test_two_processes_take_the_same_steps_as_one(tmp_path: Path, tiny_dir: Path) -> None:
    """DDP over gloo on CPU: 2 processes x batch 2 see the examples of 1 process x batch 4, so the curves match."""
    import subprocess
    import sys

    curves = []
    for name, batch, launcher in (("one", 4, []), ("two", 2, ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])):
        (tmp_path / name).mkdir()
        path = make_project(tmp_path / name, tiny_dir, f"  method: full\n  max_steps: 6\n  lr: 0.01\n  precision: fp32\n  batch_size: {batch}\n", n_train=10)
        result = subprocess.run([sys.executable, *launcher, "-m", "adhere", "train", str(path)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        metrics = (tmp_path / name / "runs" / "p" / "train" / "metrics.jsonl").read_text().splitlines()
        curves.append([json.loads(line)["loss"] for line in metrics])
    assert len(curves[0]) == 6
    assert curves[0] == pytest.approx(curves[1], rel=1e-4)


def test_a_diverging_loss_stops_with_a_clear_message_and_keeps_checkpoints(tmp_path: Path, tiny_dir: Path) -> None:
    path = make_project(tmp_path, tiny_dir, "  method: full\n  max_steps: 40\n  lr: 1000000.0\n  warmup_ratio: 0\n  schedule: constant\n  precision: fp32\n  save_every: 1\n  max_grad_norm: 1000000.0\n")
    with pytest.raises(UserError, match=r"training stopped at step \d+: the loss is (nan|inf)") as info:
        adhere.train.run(load_config(path))
    stopped = int(str(info.value).split("step ")[1].split(":")[0])
    kept = sorted(p.name for p in (tmp_path / "runs" / "p" / "train" / "checkpoints").iterdir() if not p.name.startswith("."))
    assert kept and kept[-1] == f"step-{stopped - 1:06d}"  # the last good step survives for --resume


def test_gradient_checkpointing_changes_memory_not_results(tmp_path: Path, tiny_dir: Path) -> None:
    curves = []
    for flag in ("false", "true"):
        (tmp_path / flag).mkdir()
        path = make_project(tmp_path / flag, tiny_dir, f"  max_steps: 4\n  lr: 0.01\n  precision: fp32\n  lora: {{r: 4, dropout: 0}}\n  gradient_checkpointing: {flag}\n")
        run_dir = adhere.train.run(load_config(path))
        curves.append([json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()])
    assert curves[0] == pytest.approx(curves[1], rel=1e-5) and curves[0][0] != curves[0][-1]


@pytest.mark.embedded
def test_a_short_real_run_on_the_embedded_model_lowers_validation_loss(tmp_path: Path) -> None:
    colours, animals = ["red", "blue", "green", "black"], ["cat", "dog", "horse", "owl", "fox", "bear"]
    rows = []
    for i in range(40):
        colour, animal = colours[i % 4], animals[i % 6]
        answer = json.dumps({"animal": animal, "colour": colour, "legs": 2 if animal == "owl" else 4})
        rows.append({"messages": [{"role": "user", "content": f"Describe a {colour} {animal} as JSON."},
                                  {"role": "assistant", "content": answer}], "meta": {}})
    data = tmp_path / "runs" / "p" / "data"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:32]))
    (data / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[32:]))
    (tmp_path / "adhere.yaml").write_text("name: p\ntrain:\n  max_steps: 8\n  batch_size: 4\n  lr: 0.001\n  eval_every: 1\n  max_length: 128\n")
    run_dir = adhere.train.run(load_config(tmp_path / "adhere.yaml"))
    evals = [json.loads(line)["valid_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert evals[-1] < 0.7 * evals[0], evals


def test_tensorboard_logging_writes_the_loss_curve(tmp_path: Path, tiny_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = make_project(tmp_path, tiny_dir, "  max_steps: 3\n  batch_size: 2\n  lr: 0.01\n  tensorboard: true\n")
    run_dir = adhere.train.run(load_config(path))
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    logged = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert losses == pytest.approx(logged, abs=1e-5) and events.Scalars("train/valid_loss")
