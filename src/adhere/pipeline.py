"""The main job: all steps in order, each redone only when what it is made from changed.

    adhere run adhere.yaml                  # (synth ->) spec -> data -> baseline -> train (-> self_pairs -> dpo) -> eval
    adhere run adhere.yaml --force train    # redo training (and what depends on it)
    adhere run adhere.yaml --serve          # then serve the tuned model

Stages hand each other files (house style 1). Each finished stage leaves
`workdir/<stage>/fingerprint.json`: a hash of every setting it reads (whole
config sections, and single keys of others: the data stage's token filter reads
`train.max_length`) and of its input files. A stage whose fingerprint still
matches and whose outputs exist is skipped, so a second `adhere run` after a
crash or a config change redoes only what changed; a changed output changes the
next stage's inputs, so the redo flows downstream. A training run cut off
mid-way resumes from its last checkpoint when its fingerprint is unchanged. A
failing stage raises before it writes its fingerprint, and earlier stages'
outputs stay as they were.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from adhere import runs
from adhere.errors import UserError, require_files

if TYPE_CHECKING:
    from adhere.config import ProjectConfig


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    sections: tuple[str, ...]  # config sections ('data') and single keys ('train.max_length') the stage reads
    inputs: Callable[[ProjectConfig], dict[str, Path]]  # files it reads: by config key, or earlier stages' outputs
    outputs: tuple[str, ...]  # files it writes in workdir/<name>/ (all must exist for a skip)


def _template(config: ProjectConfig) -> dict[str, Path]:
    """model.chat_template when it names a file: every stage that renders a chat reads it."""
    path = config.model.template_file()
    return {"model.chat_template": path} if path else {}


def _synth_inputs(config: ProjectConfig) -> dict[str, Path]:
    from adhere.synth.stage import input_files

    return input_files(config) | _template(config)


def _data_inputs(config: ProjectConfig) -> dict[str, Path]:
    from adhere.data.stage import input_files

    return input_files(config) | (_template(config) if config.data.token_checks else {})


def _train_inputs(config: ProjectConfig) -> dict[str, Path]:
    """train.jsonl, and valid.jsonl when the data stage wrote one; training never reads the eval split."""
    data = config.stage_dir("data")
    files = {"train": data / "train.jsonl"}
    if (data / "valid.jsonl").is_file():
        files["valid"] = data / "valid.jsonl"
    return files | _template(config)


def _eval_inputs(config: ProjectConfig) -> dict[str, Path]:
    data = config.stage_dir("data")
    files = {"eval_split": data / "eval.jsonl"}
    if config.eval.ifeval_file:
        files["eval.ifeval_file"] = Path(config.eval.ifeval_file)
    if config.eval.custom_file:
        files["eval.custom_file"] = Path(config.eval.custom_file)
    return files | _template(config)


def _tuned_inputs(config: ProjectConfig) -> dict[str, Path]:
    """The eval split and suites, the tuned weights, and the SFT weights when eval.models lists 'sft'."""
    from adhere.generation.weights import tuned_weights

    weights = tuned_weights(config, needed_by="the eval stage evaluates the tuned model",
                            otherwise=", or evaluate the base model only: --set eval.models='[base]'")
    files = {**_eval_inputs(config), "weights": weights}
    if any(m.kind == "sft" for m in config.eval.models):
        files["sft_weights"] = tuned_weights(config, needed_by="eval.models lists 'sft'", stage="train")
    return files


def _dpo_inputs(config: ProjectConfig) -> dict[str, Path]:
    """The pair files, and the SFT weights DPO starts from when `adhere train` wrote them."""
    from adhere.generation.weights import find_tuned_weights
    from adhere.train.dpo import pair_paths

    sft = find_tuned_weights(config, "train")
    return pair_paths(config) | ({"sft_weights": sft} if sft else {}) | _template(config)


def _grpo_inputs(config: ProjectConfig) -> dict[str, Path]:
    """The prompts (train.jsonl), the weights GRPO starts from when the stage before wrote them, a user reward's module."""
    from adhere.generation.weights import find_tuned_weights
    from adhere.train.grpo import prompts_path, start_stage

    assert config.grpo is not None
    start = find_tuned_weights(config, start_stage(config))
    modules = {f"reward {r.function}": r.module_file() for r in config.grpo.rewards}
    return ({"prompts": prompts_path(config)} | ({"start_weights": start} if start else {})
            | {k: v for k, v in modules.items() if v is not None} | _template(config))


def _self_pairs_inputs(config: ProjectConfig) -> dict[str, Path]:
    """train.jsonl and the SFT weights that answer (self_pairs.stage.input_files)."""
    from adhere.self_pairs.stage import input_files

    return input_files(config) | _template(config)


# The data stage reads train.max_length (its token filter drops what training would truncate) and
# train.eval_every (with it, data.validation_fraction's automatic 5% validation split; dpo.eval_every
# for the held-out pairs); its inputs
# include every benchmark of eval.suites, which it decontaminates against.
STAGES = (
    Stage("spec", "Define the target instructions", ("spec",), lambda c: {}, ("spec.json",)),
    Stage("data", "Curate the data", ("spec", "data", "model", "train.max_length", "train.eval_every", "dpo.eval_every"),
          _data_inputs,
          ("train.jsonl", "eval.jsonl")),
    Stage("baseline", "Evaluate the base model", ("spec", "model", "eval"), _eval_inputs, ("results.json",)),
    Stage("train", "Tune", ("spec", "model", "train"), _train_inputs, ("summary.json",)),
    Stage("eval", "Evaluate base vs tuned", ("spec", "model", "train", "dpo", "grpo", "eval"), _tuned_inputs,
          ("results.json", "report.html")),
)
NAMES = tuple(stage.name for stage in STAGES)
# Run first, and only when adhere.yaml has a synth section; its synth.jsonl reaches training through data.sources.
SYNTH = Stage("synth", "Generate synthetic data", ("spec", "model", "synth"), _synth_inputs, ("synth.jsonl",))
# Run after train, and only when adhere.yaml has a dpo section; its weights are then the tuned model eval compares.
DPO = Stage("dpo", "Preference-tune (DPO)", ("spec", "model", "train.method", "train.lora", "dpo"), _dpo_inputs,
            ("summary.json",))
# Run before dpo, and only with dpo.self_pairs: the SFT model's own answers, graded, as pairs dpo reads.
SELF_PAIRS = Stage("self_pairs", "Pair the model's own answers", ("spec", "model", "eval.item_f1", "dpo.self_pairs"),
                   _self_pairs_inputs, ("pairs.jsonl", "stats.json"))
# Run last of the tuning stages (after dpo when there is one), and only when adhere.yaml has a grpo section.
GRPO = Stage("grpo", "Reinforce (GRPO)", ("spec", "model", "eval.item_f1", "train.method", "train.lora", "grpo"),
             _grpo_inputs, ("summary.json",))
OPTIONAL = (SYNTH.name, SELF_PAIRS.name, DPO.name, GRPO.name)


def stages(config: ProjectConfig) -> tuple[Stage, ...]:
    """The stages `config` runs, in order: STAGES, after SYNTH when there is a synth section, DPO after train
    when there is a dpo section, preceded by SELF_PAIRS when it has self_pairs, and GRPO after those with a grpo section."""
    dpo = () if config.dpo is None else (SELF_PAIRS, DPO) if config.dpo.self_pairs is not None else (DPO,)
    grpo = (GRPO,) if config.grpo is not None else ()
    cut = NAMES.index("train") + 1
    return ((SYNTH,) if config.synth is not None else ()) + STAGES[:cut] + dpo + grpo + STAGES[cut:]


def fingerprint(stage: Stage, config: ProjectConfig) -> str:
    """SHA-256 of the settings `stage` reads and the contents of its input files."""
    from importlib import metadata

    sections = {name: _setting(config, name) for name in stage.sections}
    files = {}
    for name, path in stage.inputs(config).items():
        if not path.exists() and path.is_relative_to(config.workdir):
            raise UserError(f"{stage.name}: its input {path} is missing; run the stages before it (adhere run does)")
        require_files({name: path})  # a file of the user's, named by its config key as every command names it
        files[name] = runs.file_hash(path)
    document = {"stage": stage.name, "sections": sections, "inputs": files, "adhere": metadata.version("adhere")}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _setting(config: ProjectConfig, key: str) -> Any:
    """The JSON value of a config section or dotted key."""
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part) if value is not None else None  # an optional section (dpo) left out
    return _as_json(value)


def _as_json(value: Any) -> Any:
    """A setting as JSON values: sections dumped, and those inside a mapping or list too (eval.item_f1's entries)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {key: _as_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(item) for item in value]
    return value


def is_current(stage: Stage, config: ProjectConfig) -> bool:
    """Whether `stage`'s outputs exist and were made from the current config and inputs."""
    folder = config.stage_dir(stage.name)
    record = folder / "fingerprint.json"
    if not record.is_file() or not all((folder / name).is_file() for name in stage.outputs):
        return False
    try:
        return json.loads(record.read_text())["sha256"] == fingerprint(stage, config)
    except (UserError, ValueError, KeyError):
        return False


Reporter = Callable[[str, dict[str, Any]], None]  # (event, details): 'stage', 'skip', 'done', 'train', 'eval', 'log'


def run(config: ProjectConfig, report: Reporter = lambda event, details: None, force: tuple[str, ...] = ()) -> Path:
    """Run every stage that is not current (and those in `force`); return workdir/eval/."""
    unknown = [name for name in force if name not in (*OPTIONAL, *NAMES)]
    if unknown:
        raise UserError(f"--force {unknown[0]}: no such stage; stages are {', '.join((*OPTIONAL, *NAMES))}")
    active = stages(config)
    for index, stage in enumerate(active, start=1):
        details = {"index": index, "total": len(active), "name": stage.name, "title": stage.title}
        if stage.name not in force and is_current(stage, config):
            report("skip", details)
            continue
        report("stage", details)
        folder = runs.stage_folder(config, stage.name)
        pending = folder / "fingerprint.pending.json"
        resume = stage.name in ("train", "dpo", "grpo") and _can_resume(config, pending, stage)
        (folder / "fingerprint.json").unlink(missing_ok=True)  # no longer current, whatever happens next
        print_ = fingerprint(stage, config)
        runs.write_json_atomic(pending, {"sha256": print_})
        _run_stage(stage.name, config, report, resume)
        runs.write_json_atomic(folder / "fingerprint.json", {"sha256": print_})
        pending.unlink(missing_ok=True)
        report("done", details)
    return config.stage_dir("eval")


def _can_resume(config: ProjectConfig, pending: Path, stage: Stage) -> bool:
    """A training run that was cut off with the same config and data, and left a checkpoint.

    A run that wrote summary.json finished training (it was cut off after, writing its lineage):
    there is nothing to resume, and it is redone from the start.
    """
    from adhere.train import checkpoints

    train_dir = config.stage_dir(stage.name)
    if not pending.is_file() or checkpoints.latest(train_dir) is None or (train_dir / "summary.json").is_file():
        return False
    return json.loads(pending.read_text()).get("sha256") == fingerprint(stage, config)


def _run_stage(name: str, config: ProjectConfig, report: Reporter, resume: bool) -> None:
    if name == "synth":
        _run_synth(config, report)
    elif name == "spec":
        from adhere.spec.stage import run as spec_run

        spec_run(config)
    elif name == "data":
        from adhere.data import run as data_run
        from adhere.data.report import split_counts

        folder = data_run(config)
        stats = json.loads((folder / "stats.json").read_text())
        if not stats["train"]:
            raise UserError(f"data: no training example left of {stats['rows_in']} rows; see {folder / 'rejected.jsonl'}")
        report("log", {"message": f"{stats['rows_in']} rows in: {split_counts(stats)}, {stats['rejected']} rejected"})
    elif name == "self_pairs":
        _run_self_pairs(config, report)
    elif name in ("train", "dpo", "grpo"):
        from adhere.train import run as train_run

        if resume:
            report("log", {"message": f"resuming the interrupted {name} run from its last checkpoint"})
        train_run(config, log=lambda metrics: report("train", metrics), resume=resume, stage=name)
    else:
        from adhere.eval import run as eval_run
        from adhere.eval.config import ModelRef

        models = None
        if name == "baseline":  # every model but the tuned ones, which do not exist yet
            models = [m for m in config.eval.models if m.kind not in ("tuned", "sft")] or [ModelRef(name="base", kind="base")]
        eval_run(config, log=lambda message: report("log", {"message": message}), stage=name, models=models,
                 progress=lambda label, done, total: report("eval", {"label": label, "done": done, "total": total}))


def _run_synth(config: ProjectConfig, report: Reporter) -> None:
    from adhere.synth import run as synth_run

    folder = synth_run(config, log=lambda message: report("log", {"message": message}))
    stats = json.loads((folder / "stats.json").read_text())
    if not stats["kept"]:
        raise UserError(f"synth: no record kept of {stats['candidates']} candidates; see {folder / 'rejected.jsonl'}")
    report("log", {"message": f"{stats['kept']} synthetic records kept of {stats['candidates']} candidates"})
    if str(folder / "synth.jsonl") not in {s.path for s in config.data.sources}:
        report("log", {"message": f"note: {folder / 'synth.jsonl'} is not in data.sources, so nothing trains on it"})


def _run_self_pairs(config: ProjectConfig, report: Reporter) -> None:
    from adhere.self_pairs import run as self_pairs_run

    folder = self_pairs_run(config, log=lambda message: report("log", {"message": message}))
    stats = json.loads((folder / "stats.json").read_text())
    report("log", {"message": f"{stats['kept']} pairs kept of {stats['prompts']} prompts (mean sample score "
                              f"{stats['mean_sample_score']}, reference {stats['mean_reference_score']})"})
