"""Step 4b: DPO in the training loop on a tiny model: the loss against a hand computation and TRL, the
reference, the masks, learning a preference, exact resume, where the weights go, and bad input."""

from __future__ import annotations

import json
import math
import shutil
from tempfile import TemporaryDirectory
from pathlib import Path
from typing import Any

import pytest
import torch

import adhere.train
from adhere.config import load_config
from adhere.errors import UserError

QUESTIONS = ["What is 2+2?", "Name the capital of France.", "Is water wet?", "Write an add function in Python.",
             "What colour is the sky?", "How many legs has a cat?", "Say hello.", "What is the capital of Italy?"]


def pair(question: str, chosen: str, rejected: str, history: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"messages": [*(history or []), {"role": "user", "content": question}],
            "chosen": {"role": "assistant", "content": chosen}, "rejected": {"role": "assistant", "content": rejected},
            "meta": {"id": question}}


def yes_no_pairs(questions: list[str]) -> list[dict[str, Any]]:
    """A preference the tiny model can learn from a few prompts and apply to unseen ones: 'Yes.' over 'No.'."""
    return [pair(q, "Yes.", "No.") for q in questions]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_project(tmp_path: Path, tiny_dir: Path, dpo_yaml: str, pairs: list[dict[str, Any]],
                 valid: list[dict[str, Any]] | None = None, train_yaml: str = "  lora: {r: 4, dropout: 0}\n") -> Path:
    data = tmp_path / "runs" / "p" / "data"
    write_jsonl(data / "pairs.jsonl", pairs)
    if valid is not None:
        write_jsonl(data / "pairs_valid.jsonl", valid)
    path = tmp_path / "adhere.yaml"
    path.write_text(f"name: p\nmodel: {{base: {tiny_dir}}}\ntrain:\n{train_yaml}dpo:\n{dpo_yaml}")
    return path


def rendered(tokenizer: Any, rows: list[dict[str, Any]]) -> list[Any]:
    from adhere.train.dpo import render_pair

    return [render_pair(r, tokenizer, 256, f"row {i}") for i, r in enumerate(rows)]


def test_dpo_loss_equals_a_hand_computation_and_trls_at_step_0(tmp_path: Path) -> None:
    """Policy and reference differ (two seeds), so the loss is not the trivial ln 2 of identical models."""
    from datasets import Dataset
    from tiny import build_tiny_model, build_tiny_tokenizer
    from trl import DPOConfig, DPOTrainer

    from adhere.train.dpo import DpoLoss, collate_pairs, terms
    from adhere.train.loop import means

    tokenizer = build_tiny_tokenizer()
    policy, reference = build_tiny_model(len(tokenizer), seed=1), build_tiny_model(len(tokenizer), seed=2)
    rows = [pair(QUESTIONS[0], "Four.", "Five, I think."), pair(QUESTIONS[1], "Paris.", "Rome is the capital."),
            pair(QUESTIONS[2], "Yes", "No, never."), pair(QUESTIONS[3], "def add(a, b):\n    return a + b", "add")]
    beta, sft_weight = 0.1, 0.5

    def answer_logps(model: Any, side: str) -> tuple[list[float], list[float]]:
        """Per pair: the answer's summed log-probability and its token losses, by log_softmax over the whole sequence."""
        sums, nlls = [], []
        for row in rows:
            prompt = tokenizer.apply_chat_template(row["messages"], tokenize=False, add_generation_prompt=True)
            prompt_ids = tokenizer(prompt)["input_ids"]
            ids = tokenizer(prompt + row[side]["content"] + "<|im_end|>")["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            token_logps = [float(logp[t - 1, ids[t]]) for t in range(len(prompt_ids), len(ids))]
            sums.append(sum(token_logps))
            nlls += [-x for x in token_logps]
        return sums, nlls

    (pc, chosen_nll), (pr, _) = answer_logps(policy, "chosen"), answer_logps(policy, "rejected")
    (rc, _), (rr, _) = answer_logps(reference, "chosen"), answer_logps(reference, "rejected")
    hand_dpo = sum(-math.log(1 / (1 + math.exp(-beta * ((a - b) - (c - d))))) for a, b, c, d in zip(pc, rc, pr, rr)) / 4
    hand = hand_dpo + sft_weight * sum(chosen_nll) / len(chosen_nll)

    pairs = rendered(tokenizer, rows)
    pairs = [type(p)(p.chosen, p.rejected, (rc[i], rr[i])) for i, p in enumerate(pairs)]
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    counts = {"pairs": 4, "chosen_tokens": sum(p.chosen.trained_tokens for p in pairs)}
    with torch.no_grad():
        sums = {k: float(v) for k, v in DpoLoss(policy, beta)(**batch).items()}
    ours = means(sums, counts, terms(sft_weight))
    assert counts["chosen_tokens"] == len(chosen_nll)  # the mask trains exactly the answer and its end-of-turn token
    assert ours["dpo_loss"] == pytest.approx(hand_dpo, abs=1e-5) and ours["loss"] == pytest.approx(hand, abs=1e-5)

    # TRL 1.16 on the same pairs (prompt text as the chat template renders it, each answer ending in <|im_end|>):
    # its 'sigmoid' loss plus its 'sft' loss (mean over the chosen tokens) weighted as ours.
    dataset = Dataset.from_list([{"prompt": tokenizer.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True),
                                  "chosen": r["chosen"]["content"] + "<|im_end|>", "rejected": r["rejected"]["content"] + "<|im_end|>"}
                                 for r in rows])
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, loss_type=["sigmoid", "sft"], loss_weights=[1.0, sft_weight],
                     per_device_train_batch_size=4, bf16=False, use_cpu=True, report_to=[], max_length=None, dataset_num_proc=None)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset, processing_class=tokenizer)
    trl_batch = next(iter(trainer.get_train_dataloader()))
    policy.eval()  # no dropout in the tiny Llama; eval mode just makes that explicit for both sides
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(trainer.model, trl_batch))
    assert trl_loss == pytest.approx(ours["loss"], abs=1e-4)


def test_reference_with_the_adapter_disabled_is_the_base_model() -> None:
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model
    from tiny import build_tiny_model, build_tiny_tokenizer

    from adhere.train.dpo import reference_logps

    tokenizer = build_tiny_tokenizer()
    pairs = rendered(tokenizer, yes_no_pairs(QUESTIONS[:3]))
    accelerator = Accelerator(cpu=True)
    base = reference_logps(build_tiny_model(len(tokenizer)), pairs, 2, tokenizer.pad_token_id, accelerator, False)
    # init_lora_weights=False: a nonzero adapter, as one continued from SFT, so enabled and disabled differ
    peft = get_peft_model(build_tiny_model(len(tokenizer)), LoraConfig(r=4, init_lora_weights=False, target_modules="all-linear"))
    disabled = reference_logps(peft, pairs, 2, tokenizer.pad_token_id, accelerator, True)
    enabled = reference_logps(peft, pairs, 2, tokenizer.pad_token_id, accelerator, False)
    torch.testing.assert_close(disabled, base, rtol=0, atol=1e-6)
    assert base.shape == (3, 2) and (enabled - base).abs().max() > 1e-3 and (base < 0).all()


def test_masks_train_only_each_answer_and_both_sides_share_the_prompt_tokens() -> None:
    from tiny import build_tiny_tokenizer

    from adhere.models.masking import IGNORE_INDEX

    tokenizer = build_tiny_tokenizer()
    history = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi, what can I do?"}]
    (p,) = rendered(tokenizer, [pair("Is water wet?", "Yes, it is.", "No.", history)])
    for side, answer in ((p.chosen, "Yes, it is."), (p.rejected, "No.")):
        trained = [t for t, label in zip(side.input_ids, side.labels) if label != IGNORE_INDEX]
        assert tokenizer.decode(trained) == answer + "<|im_end|>"  # the earlier assistant turn is context
        start = side.labels.index(next(label for label in side.labels if label != IGNORE_INDEX))
        assert all(label == IGNORE_INDEX for label in side.labels[:start])
    start = len(p.chosen.input_ids) - p.chosen.trained_tokens - 1  # the "\n" after <|im_end|> is not trained
    assert p.chosen.input_ids[:start] == p.rejected.input_ids[:start] and p.chosen.labels[start] != IGNORE_INDEX


def test_a_short_run_learns_the_preference_on_held_out_prompts(tmp_path: Path, tiny_dir: Path) -> None:
    path = make_project(tmp_path, tiny_dir, "  beta: 0.5\n  sft_weight: 0\n  lr: 0.01\n  max_steps: 12\n  batch_size: 3\n"
                        "  warmup_ratio: 0\n  eval_every: 4\n  precision: fp32\n  seed: 3\n",
                        yes_no_pairs(QUESTIONS[:6]), yes_no_pairs(QUESTIONS[6:]))
    logged: list[dict] = []
    run_dir = adhere.train.run(load_config(path), log=logged.append, stage="dpo")
    # The reference pass reports its progress before the first step: 6 train + 2 held-out pairs, 3 at a time.
    reference = [(m["done"], m["total"]) for m in logged if m.get("phase") == "reference"]
    assert reference == [(3, 8), (6, 8), (8, 8)] and "phase" not in logged[-1]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # Pinned: a new adapter starts as the base model, which is the reference, so every margin is 0 and the loss ln 2.
    assert metrics[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-5) and metrics[0]["reward_accuracy"] == 0
    held_out = [m["valid_reward_accuracy"] for m in metrics if "valid_reward_accuracy" in m]
    assert len(held_out) == 3 and held_out[-1] == 1.0 and metrics[-1]["valid_margin"] > 0.5, metrics[-1]
    for key in ("margin", "chosen_logp", "rejected_logp", "chosen_reward", "rejected_reward", "lr"):
        assert key in metrics[-1]
    assert metrics[-1]["chosen_reward"] > 0 > metrics[-1]["rejected_reward"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_valid"]["reward_accuracy"] == 1.0 and summary["train_examples"] == 6
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file() and (run_dir / "reference_logps.safetensors").is_file()
    assert {"config.yaml", "env.json", "lineage.json", "loss.png"} <= {p.name for p in run_dir.iterdir()}


def test_under_bf16_the_reference_of_each_train_pair_is_its_first_training_batchs() -> None:
    """Under bf16 autocast a sequence's log-probability depends on the batch it is padded into (the embedded
    model's step-0 loss was 0.6955 with the reference batched in file order, where policy = reference gives
    ln 2 = 0.6931), so the reference pass batches the train pairs as the loop's first epoch does."""
    from types import SimpleNamespace

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from tiny import build_tiny_model, build_tiny_tokenizer

    from adhere.train.dpo import DpoLoss, collate_pairs, with_reference
    from adhere.train.loop import micro_batches

    tokenizer = build_tiny_tokenizer()
    # Answers of 8 lengths in an order the loop's length-grouped batches do not keep.
    answers = ["word " * (6 * n) for n in (0, 7, 1, 6, 2, 5, 3, 4)]
    pairs = rendered(tokenizer, [pair(q, "Yes. " + a, "No. " + a) for q, a in zip(QUESTIONS, answers)])
    model = build_tiny_model(len(tokenizer), hidden_size=256)  # hidden 32 rounds the same at any padding
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator, settings, pad = Accelerator(cpu=True, mixed_precision="bf16"), SimpleNamespace(batch_size=2, seed=5), tokenizer.pad_token_id
    with TemporaryDirectory() as run_dir:
        train, _ = with_reference(pairs, [], model, settings, pad, accelerator, Path(run_dir), False)
    in_order = torch.tensor([p.reference for p in with_reference_in_order(pairs, model, pad, accelerator)])
    scorer, seen = DpoLoss(model, 1.0), {}
    stream = micro_batches(train, 2, 5, lambda p: p)
    with torch.no_grad(), accelerator.autocast():
        for _ in range(4):  # the first epoch
            group = next(stream)
            batch = collate_pairs(group, pad)
            logps = scorer.sequence_logps(batch["input_ids"], batch["attention_mask"], batch["targets"])[0].float()
            for p, chosen, rejected in zip(group, *logps.chunk(2)):
                seen[id(p)] = (p.reference, (float(chosen), float(rejected)))
    assert len(seen) == 8 and all(ref == now for ref, now in seen.values()), seen
    # the check can fail: batched in file order, the same pairs' references differ
    assert (in_order - torch.tensor([p.reference for p in train])).abs().max() > 1e-3


def with_reference_in_order(pairs: list[Any], model: Any, pad: int, accelerator: Any) -> list[Any]:
    from dataclasses import replace

    from adhere.train.dpo import reference_logps

    return [replace(p, reference=tuple(r)) for p, r in zip(pairs, reference_logps(model, pairs, 2, pad, accelerator, False).tolist())]


def test_sigkill_then_resume_continuing_an_sft_adapter_ends_with_the_uninterrupted_weights(tmp_path: Path, tiny_dir: Path) -> None:
    """DPO continues the SFT adapter (the reference is that adapter as it starts, cached on disk for the resume)."""
    from safetensors.torch import load_file
    from test_train import kill_when, records

    settings = "  beta: 0.5\n  lr: 0.01\n  max_steps: 60\n  batch_size: 2\n  save_every: 5\n  precision: fp32\n"
    sft = "  lora: {r: 4, dropout: 0.1}\n  max_steps: 3\n  batch_size: 2\n  lr: 0.01\n  precision: fp32\n"
    straight = make_project(tmp_path / "straight", tiny_dir, settings, yes_no_pairs(QUESTIONS), train_yaml=sft)
    write_jsonl(tmp_path / "straight" / "runs" / "p" / "data" / "train.jsonl", records(4))
    sft_dir = adhere.train.run(load_config(straight))
    sft_weights = load_file(sft_dir / "adapter" / "adapter_model.safetensors")
    expected = load_file(adhere.train.run(load_config(straight), stage="dpo") / "adapter" / "adapter_model.safetensors")
    assert set(expected) == set(sft_weights) and any(not torch.equal(expected[k], sft_weights[k]) for k in expected)

    killed = make_project(tmp_path / "killed", tiny_dir, settings, yes_no_pairs(QUESTIONS), train_yaml=sft)
    shutil.copytree(sft_dir, tmp_path / "killed" / "runs" / "p" / "train")
    checkpoint_dir = tmp_path / "killed" / "runs" / "p" / "dpo" / "checkpoints"
    kill_when(["dpo", str(killed)], checkpoint_dir / "step-000020")

    run_dir = adhere.train.run(load_config(killed), resume=True, stage="dpo")
    resumed = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=0)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))
    with pytest.raises(UserError, match=r"cannot resume .*dpo.beta \(0.5 -> 0.2\)"):
        (run_dir / "summary.json").unlink()
        adhere.train.run(load_config(killed, ["dpo.beta=0.2"]), resume=True, stage="dpo")


@pytest.mark.embedded
def test_a_short_real_run_on_the_embedded_model_raises_held_out_reward_accuracy(tmp_path: Path) -> None:
    """The embedded model, a new LoRA adapter: prefer the right number of legs over 3, learned on four animals and
    measured on two it never saw (the reference is the base model, so reward accuracy starts from 0)."""
    def pairs(animals: list[str]) -> list[dict[str, Any]]:
        out = []
        for i, (colour, animal) in enumerate((c, a) for c in ("red", "blue", "green", "black") for a in animals):
            legs = 2 if animal in ("owl", "hen") else 4
            answer = {"animal": animal, "colour": colour}
            out.append(pair(f"Describe a {colour} {animal} as JSON with its number of legs.", json.dumps(answer | {"legs": legs}),
                            json.dumps(answer | {"legs": 3})) | {"meta": {"id": f"{animal}-{i}"}})
        return out

    data = tmp_path / "runs" / "p" / "data"
    write_jsonl(data / "pairs.jsonl", pairs(["cat", "dog", "horse", "owl"]))
    write_jsonl(data / "pairs_valid.jsonl", pairs(["fox", "hen"]))
    (tmp_path / "adhere.yaml").write_text("name: p\ndpo:\n  beta: 0.1\n  sft_weight: 0\n  lr: 0.0005\n  max_steps: 8\n"
                                          "  batch_size: 4\n  eval_every: 4\n  max_length: 128\n  warmup_ratio: 0\n")
    run_dir = adhere.train.run(load_config(tmp_path / "adhere.yaml"), stage="dpo")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    held_out = [m["valid_reward_accuracy"] for m in metrics if "valid_reward_accuracy" in m]
    assert metrics[0]["reward_accuracy"] == 0 and held_out[-1] >= 0.75 and metrics[-1]["valid_margin"] > 0, held_out


def test_with_a_dpo_section_tuned_means_dpo_and_sft_names_the_supervised_weights(tmp_path: Path, tiny_dir: Path) -> None:
    from adhere import pipeline
    from adhere.generation.refs import ModelRef, describe
    from adhere.generation.weights import find_tuned_weights

    path = make_project(tmp_path, tiny_dir, "  beta: 0.1\n", yes_no_pairs(QUESTIONS[:2]))
    config = load_config(path, ["eval.models=[base, sft, tuned]"])
    for stage in ("train", "dpo"):
        (config.stage_dir(stage) / "adapter").mkdir(parents=True)
    assert find_tuned_weights(config) == config.stage_dir("dpo") / "adapter"
    assert describe(ModelRef(name="sft", kind="sft"), config)["source"] == str(config.stage_dir("train") / "adapter")
    assert [m.kind for m in config.eval.models] == ["base", "sft", "tuned"]
    assert [s.name for s in pipeline.stages(config)] == ["spec", "data", "baseline", "train", "dpo", "eval"]
    assert "dpo" not in [s.name for s in pipeline.stages(load_config(path, ["dpo=null"]))]
    assert find_tuned_weights(load_config(path, ["dpo=null"])) == config.stage_dir("train") / "adapter"
    # the dpo stage is redone when the SFT weights it starts from change
    before = pipeline.fingerprint(pipeline.DPO, config)
    (config.stage_dir("train") / "adapter" / "adapter_model.safetensors").write_bytes(b"new")
    assert pipeline.fingerprint(pipeline.DPO, config) != before


def test_bad_input_is_a_clear_error_before_training(tmp_path: Path, tiny_dir: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from test_cli import run_cli

    path = make_project(tmp_path, tiny_dir, "  beta: 0\n", yes_no_pairs(QUESTIONS[:2]))
    with pytest.raises(UserError, match="dpo.beta: expected a positive number, got 0"):
        load_config(path)
    code, _, stderr = run_cli(capsys, monkeypatch, "dpo", str(path))
    assert code == 2 and "dpo.beta" in stderr
    path = make_project(tmp_path, tiny_dir, "  beta: 0.1\n  max_steps: 1\n  eval_every: 1\n", yes_no_pairs(QUESTIONS[:2]))
    with pytest.raises(UserError, match="dpo.eval_every is set but there are no held-out pairs .*pairs.jsonl"):
        adhere.train.run(load_config(path), stage="dpo")  # evaluations would silently never happen
    path = make_project(tmp_path, tiny_dir, "  beta: 0.1\n  max_steps: 1\n  max_length: 16\n", yes_no_pairs(QUESTIONS[:2]))
    with pytest.raises(UserError, match="none of its 2 pairs has an answer to train within dpo.max_length"):
        adhere.train.run(load_config(path), stage="dpo")
    write_jsonl(tmp_path / "runs" / "p" / "data" / "pairs.jsonl", [])
    with pytest.raises(UserError, match="pairs.jsonl: it is empty"):
        adhere.train.run(load_config(path), stage="dpo")
    (tmp_path / "runs" / "p" / "data" / "pairs.jsonl").unlink()
    with pytest.raises(UserError, match="dpo: no preference pairs in .*pairs.jsonl; list pair files under data.pairs"):
        adhere.train.run(load_config(path), stage="dpo")
    with pytest.raises(UserError, match="adhere.yaml has no dpo section"):
        adhere.train.run(load_config(path, ["dpo=null"]), stage="dpo")
