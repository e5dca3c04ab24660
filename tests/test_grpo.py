"""Step 4c: GRPO on a tiny model: advantages and the clipped objective by hand, no gradient from a group that
scores the same, the rewards from the spec and the graders, a toy verifiable task learned, exact resume, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import adhere.train
from adhere.config import load_config
from adhere.errors import UserError

QUESTIONS = ["What is 2+2?", "Name the capital of France.", "Is water wet?", "Write an add function in Python.",
             "What colour is the sky?", "How many legs has a cat?", "Say hello.", "What is the capital of Italy?"]
LOWERCASE = '''
def share(completion, prompt, reference, meta):
    """The share of the answer's letters that are lowercase: a toy verifiable reward."""
    letters = [c for c in completion if c.isalpha()]
    return sum(c.islower() for c in letters) / len(letters) if letters else 0.0


def upper(completion, prompt, reference, meta):
    """The share of the answer's letters that are uppercase: a toy verifiable reward the tiny model starts low on."""
    letters = [c for c in completion if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


def broken(completion, prompt, reference, meta):
    raise KeyError("no such field")
'''


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_project(tmp_path: Path, tiny_dir: Path, grpo_yaml: str, module: str = "", rows: list[dict] | None = None,
                 extra: str = "") -> Path:
    """adhere.yaml with a grpo section, workdir/data/train.jsonl (a question and a reference answer per row), and
    `module`.py beside adhere.yaml holding LOWERCASE's reward functions."""
    rows = rows if rows is not None else [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "yes"}], "meta": {"id": f"q{i}"}}
        for i, q in enumerate(QUESTIONS)]
    write_jsonl(tmp_path / "runs" / "p" / "data" / "train.jsonl", rows)
    if module:
        (tmp_path / f"{module}.py").write_text(LOWERCASE)
    path = tmp_path / "adhere.yaml"
    path.write_text(f"name: p\nmodel: {{base: {tiny_dir}}}\ntrain:\n  lora: {{r: 4, dropout: 0}}\n{extra}grpo:\n{grpo_yaml}")
    return path


def test_advantages_and_the_clipped_objective_by_hand() -> None:
    from adhere.train.grpo import advantages, clipped_objective, k3_kl

    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])  # two groups of 4
    scaled, same = advantages(rewards, 4, scale=True)
    std = math.sqrt(((0.5**2) * 4) / 3)  # unbiased, as TRL
    expected = [0.5 / (std + 1e-4), -0.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.5 / (std + 1e-4), 0, 0, 0, 0]
    torch.testing.assert_close(scaled, torch.tensor(expected))
    assert same.tolist() == [False] * 4 + [True] * 4
    torch.testing.assert_close(advantages(rewards, 4, scale=False)[0], torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))

    # ratio = exp(logp - old): 1.5 (above 1 + 0.2), 0.5 (below 1 - 0.2), 1.1 (inside)
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5, 1.1]))
    old = torch.zeros(5)
    adv = torch.tensor([2.0, -2.0, 2.0, -2.0, 1.0])
    objective, clipped = clipped_objective(logp, old, adv)
    # min(r A, clip(r) A): 1.2*2 (clipped), 1.5*-2 (the unclipped is lower), 0.5*2, 0.8*-2 (clipped), 1.1
    torch.testing.assert_close(objective, torch.tensor([2.4, -3.0, 1.0, -1.6, 1.1]))
    assert clipped.tolist() == [True, False, False, True, False]
    kl = k3_kl(torch.log(torch.tensor([0.5, 0.25])), torch.log(torch.tensor([0.25, 0.25])))
    torch.testing.assert_close(kl, torch.tensor([0.5 - math.log(0.5) - 1, 0.0]))


def test_a_group_whose_answers_score_the_same_gives_no_gradient() -> None:
    from tiny import build_tiny_model

    from adhere.train.batches import Example, collate
    from adhere.train.grpo import GrpoLoss, advantages

    model = build_tiny_model(400)
    rows = [Example([5, 6, 7, 8 + k], [-100, -100, 7, 8 + k]) for k in range(4)]
    batch = collate(rows, 0)
    loss = GrpoLoss(model, 0.0, ("r",), None)

    def grads(rewards: list[float]) -> list[torch.Tensor]:
        model.zero_grad()
        advantage, same = advantages(torch.tensor(rewards), 4, scale=True)
        sums = loss(**batch, advantages=advantage, rewards=torch.tensor(rewards)[:, None], total=torch.tensor(rewards),
                    same=same.float(), truncated=torch.zeros(4), lengths=torch.full((4,), 2.0))
        sums["pg_loss"].backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    assert all(torch.count_nonzero(g) == 0 for g in grads([0.7, 0.7, 0.7, 0.7]))
    assert any(torch.count_nonzero(g) > 0 for g in grads([1.0, 0.0, 0.0, 0.0]))


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft 0.21, upstream
def test_the_merged_sampler_follows_the_live_adapter() -> None:
    """Sampling from a merged copy (grpo.sample_merged): after the adapter moves, a refresh gives the logits of the
    model with the adapter, and the base weights under the adapter are untouched."""
    from peft import LoraConfig, get_peft_model
    from tiny import build_tiny_model

    from adhere.generation.weights import MergedCopy

    model = get_peft_model(build_tiny_model(400), LoraConfig(r=4, target_modules="all-linear"))
    sampler = MergedCopy(model)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # the adapter moves, as after a few steps
    ids = torch.tensor([[5, 9, 17, 33, 2]])
    live = model(input_ids=ids).logits
    assert (sampler.model(input_ids=ids).logits - live).abs().max() > 1e-2  # stale until refreshed
    sampler.refresh()
    torch.testing.assert_close(sampler.model(input_ids=ids).logits, live, rtol=1e-4, atol=1e-4)
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if "lora_" not in n)
    assert MergedCopy.usable(model) and not MergedCopy.usable(build_tiny_model(400))


def test_the_rewards_score_with_the_spec_and_the_graders(tmp_path: Path, tiny_dir: Path) -> None:
    from adhere.train.rewards import GrpoPrompt, Rollout, build

    spec = ("spec:\n  task: review\n  output:\n    format: json\n    schema: {type: object, required: [summary, suggestions]}\n"
            "  constraints: [{id: max_words, n: 12}, {id: lowercase}]\n"
            "eval:\n  item_f1: {suggestion: {list: suggestions, key: [line, rule]}}\n")
    path = make_project(tmp_path, tiny_dir, "  max_new_tokens: 8\n  rewards: [{name: json}, {name: schema}, {name: constraints}, "
                        "{name: item_f1, weight: 2}, {name: rouge_l}, {name: exact_match}, {name: length, target: 4}, "
                        "{name: ifeval}, {name: function, function: 'rw_score:share'}]\n", module="rw_score", extra=spec)
    config = load_config(path)
    rewards = build(config)
    assert rewards.labels == ("json", "schema", "constraints", "item_f1", "rouge_l", "exact_match", "length", "ifeval", "share")
    assert rewards.weights[3] == 2.0
    reference = '{"summary": "x", "suggestions": [{"line": 1, "rule": "a"}, {"line": 2, "rule": "b"}]}'
    meta = {"instruction_id_list": ["detectable_format:json_format", "punctuation:no_comma"], "kwargs": [{}, {}]}
    prompt = GrpoPrompt("p1", [{"role": "user", "content": "review"}], reference, meta, [1, 2])
    answer = '{"summary": "x", "suggestions": [{"line": 1, "rule": "a"}]}'
    row = rewards.score([Rollout(prompt, answer, 6, "stop")])[0]
    scored = dict(zip(rewards.labels, row))
    assert scored["json"] == 1 and scored["schema"] == 1 and scored["constraints"] == 1  # 6 words, lowercase
    assert scored["item_f1"] == pytest.approx(2 / 3)  # precision 1, recall 1/2
    assert 0 < scored["rouge_l"] < 1 and scored["exact_match"] == 0
    assert scored["length"] == pytest.approx(-0.5)  # 6 tokens: 2 past the target of 4, of 4 to max_new_tokens 8
    assert scored["ifeval"] == 0.5 and scored["share"] == 1.0  # JSON, but with commas
    plain = rewards.score([Rollout(prompt, "Not JSON", 2, "stop")])[0]
    assert dict(zip(rewards.labels, plain)) | {"rouge_l": 0} == {"json": 0, "schema": 0, "constraints": 0.5, "item_f1": 0,
                                                                   "rouge_l": 0, "exact_match": 0, "length": 0,
                                                                   "ifeval": 0.5, "share": pytest.approx(2 / 7)}
    # a grader that needs what some prompts lack: counted and named
    bare = GrpoPrompt("p2", [{"role": "user", "content": "hi"}], None, {}, [1])
    with pytest.raises(UserError, match=r"item_f1 needs a reference answer .* 1 of 2 prompts in here have none \(p2\)"):
        rewards.check_prompts([prompt, bare], "here")


def test_a_toy_verifiable_task_is_learned(tmp_path: Path, tiny_dir: Path) -> None:
    """The reward is the share of uppercase letters in the answer; the tiny model's mean reward rises (from 0.14 to
    1.0 by step 19 when measured). Full tuning: LoRA r 4 on this 2-layer model with hidden size 32 did not move
    the reward in 30 steps at lr 0.005 to 0.05 (its weights moved; the tied head it cannot adapt is what full
    tuning used)."""
    path = make_project(tmp_path, tiny_dir, "  rewards: [{name: function, function: 'rw_toy:upper'}]\n  group_size: 4\n"
                        "  batch_size: 4\n  max_new_tokens: 12\n  lr: 0.03\n  max_steps: 24\n  precision: fp32\n"
                        "  seed: 1\n  sample_every: 10\n", module="rw_toy")
    path.write_text(path.read_text().replace("  lora: {r: 4, dropout: 0}\n", "  method: full\n"))
    logged: list[dict] = []
    run_dir = adhere.train.run(load_config(path), log=logged.append, stage="grpo")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rewards = [m["reward"] for m in metrics]
    first, last = sum(rewards[:8]) / 8, sum(rewards[-8:]) / 8
    assert last > first + 0.4, rewards
    for key in ("pg_loss", "reward_upper", "zero_std_groups", "completion_tokens", "truncated", "clip_fraction", "lr"):
        assert key in metrics[-1], key
    assert metrics[0]["clip_fraction"] == 0  # one update per sampled batch: the ratio is 1
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1, 10, 20]
    assert all(s["best"]["reward"] >= s["worst"]["reward"] for s in samples) and samples[0]["prompt_id"].startswith("q")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_rewards"]["first"] == rewards[0] and summary["train_examples"] == len(QUESTIONS)
    assert (run_dir / "model" / "model.safetensors").is_file()


def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(tmp_path: Path, tiny_dir: Path) -> None:
    """Sampling is seeded by step, sample and prompt, so the resumed run samples what the straight run sampled;
    with a KL term its reference (the starting weights) comes back from run_dir."""
    from safetensors.torch import load_file
    from test_train import kill_when

    settings = ("  rewards: [{name: function, function: 'rw_resume:share'}]\n  max_new_tokens: 10\n  lr: 0.02\n"
                "  max_steps: 40\n  batch_size: 2\n  beta: 0.05\n  save_every: 5\n  precision: fp32\n")
    straight = make_project(tmp_path / "straight", tiny_dir, settings, module="rw_resume")
    expected = load_file(adhere.train.run(load_config(straight), stage="grpo") / "adapter" / "adapter_model.safetensors")
    killed = make_project(tmp_path / "killed", tiny_dir, settings, module="rw_resume")
    kill_when(["grpo", str(killed)], tmp_path / "killed" / "runs" / "p" / "grpo" / "checkpoints" / "step-000015")
    run_dir = adhere.train.run(load_config(killed), resume=True, stage="grpo")
    resumed = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=0)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 41)) and metrics[-1]["kl"] > 0
    assert [json.loads(line)["step"] for line in (run_dir / "samples.jsonl").read_text().splitlines()] == [1, 10, 20, 30, 40]


def test_bad_input_is_a_clear_error_before_training(tmp_path: Path, tiny_dir: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from test_cli import run_cli

    def config(grpo_yaml: str, **kwargs: Any) -> Any:
        return load_config(make_project(tmp_path, tiny_dir, grpo_yaml, **kwargs))

    with pytest.raises(UserError, match=r"grpo.rewards\[0\].name: unknown reward 'item_f2'; did you mean 'item_f1'\?"):
        config("  rewards: [{name: item_f2}]\n")
    with pytest.raises(UserError, match="grpo.group_size: expected at least 2"):
        config("  rewards: [{name: json}]\n  group_size: 1\n")
    with pytest.raises(UserError, match="grpo.rewards: is empty"):
        config("  group_size: 2\n")
    with pytest.raises(UserError, match=r"grpo.rewards\[0\].name: is 'schema', but spec.output.schema is empty"):
        config("  rewards: [{name: schema}]\n")
    with pytest.raises(UserError, match=r"grpo.rewards\[0\].name: is 'item_f1', but eval.item_f1 is empty"):
        config("  rewards: [{name: item_f1}]\n")
    code, _, stderr = run_cli(capsys, monkeypatch, "grpo", str(make_project(tmp_path, tiny_dir, "  rewards: [{name: jsn}]\n")))
    assert code == 2 and "did you mean 'json'" in stderr

    # Found before the model loads: a module that does not import; found at the first step: a function that raises
    with pytest.raises(UserError, match=r"cannot import 'rw_missing' for 'rw_missing:share'.*put rw_missing.py beside adhere.yaml"):
        adhere.train.run(config("  rewards: [{name: function, function: 'rw_missing:share'}]\n"), stage="grpo")
    broken = config("  rewards: [{name: function, function: 'rw_bad:broken'}]\n  max_steps: 2\n  save_every: 1\n", module="rw_bad")
    with pytest.raises(UserError, match=r"grpo.rewards: rw_bad:broken failed on prompt q\d: KeyError: 'no such field'"):
        adhere.train.run(broken, stage="grpo")
    assert not (broken.stage_dir("grpo") / "adapter").exists() and not (broken.stage_dir("grpo") / "checkpoints").exists()
    rows = [{"messages": [{"role": "user", "content": "hi"}]}, {"messages": [{"role": "user", "content": "yo"}]}]
    no_references = config("  rewards: [{name: rouge_l}]\n", rows=rows)
    with pytest.raises(UserError, match=r"rouge_l needs a reference answer .* 2 of 2 prompts .* \(train.jsonl:1, train.jsonl:2\)"):
        adhere.train.run(no_references, stage="grpo")
    with pytest.raises(UserError, match=r"2 prompts \(lines 1, 2\) leave no room for grpo.max_new_tokens \(100\) within "
                                        r"grpo.max_length \(64\)"):
        adhere.train.run(config("  rewards: [{name: json}]\n  max_new_tokens: 100\n  max_length: 64\n", rows=rows), stage="grpo")
    with pytest.raises(UserError, match="adhere.yaml has no grpo section"):
        adhere.train.run(load_config(tmp_path / "adhere.yaml", ["grpo=null"]), stage="grpo")


def test_with_a_grpo_section_it_runs_last_of_the_tuning_stages_and_is_the_tuned_model(tmp_path: Path, tiny_dir: Path) -> None:
    from adhere import pipeline
    from adhere.generation.weights import find_tuned_weights
    from adhere.train.grpo import start_stage

    # eval.item_f1 holds sections in a mapping: the stages that read it (grpo, self_pairs) hash it too
    path = make_project(tmp_path, tiny_dir, "  rewards: [{name: item_f1}]\n", extra="dpo: {beta: 0.1}\n"
                        "eval: {item_f1: {suggestion: {list: suggestions, key: [line, rule]}}}\n")
    config = load_config(path)
    assert [s.name for s in pipeline.stages(config)] == ["spec", "data", "baseline", "train", "dpo", "grpo", "eval"]
    assert start_stage(config) == "dpo" and start_stage(load_config(path, ["dpo=null"])) == "train"
    for stage in ("train", "dpo", "grpo"):
        (config.stage_dir(stage) / "adapter").mkdir(parents=True)
    assert find_tuned_weights(config) == config.stage_dir("grpo") / "adapter"
    before = pipeline.fingerprint(pipeline.GRPO, config)  # redone when the weights it starts from change
    (config.stage_dir("dpo") / "adapter" / "adapter_model.safetensors").write_bytes(b"new")
    assert pipeline.fingerprint(pipeline.GRPO, config) != before
    other_key = load_config(path, ["eval.item_f1.suggestion.key=[rule]"])
    (other_key.stage_dir("data") / "train.jsonl").touch()
    assert pipeline.fingerprint(pipeline.GRPO, other_key) != pipeline.fingerprint(pipeline.GRPO, config)
