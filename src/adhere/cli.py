"""The `adhere` command: a thin layer over the Python API.

    adhere init my-project        # a project folder: commented adhere.yaml and sample data
    adhere run adhere.yaml        # every step below, each redone only when its inputs changed
    adhere config check adhere.yaml --set train.lr=1e-4
    adhere spec adhere.yaml       # step 1: validate and write the spec
    adhere synth adhere.yaml      # step 2, synthetic: instruction data from a teacher model
    adhere data adhere.yaml       # step 2: validate and curate the data
    adhere train adhere.yaml      # step 4: tune
    adhere self-pairs adhere.yaml # step 4b, with dpo.self_pairs: pairs from the tuned model's own graded answers
    adhere dpo adhere.yaml        # step 4b, with a dpo section: preference-tune the tuned model on pairs
    adhere grpo adhere.yaml       # step 4c, with a grpo section: reinforce with the spec's checks as rewards
    adhere eval adhere.yaml       # step 5: base vs tuned, with report.html
    adhere export adhere.yaml     # merged model folder for transformers, vLLM, ...
    adhere serve adhere.yaml      # step 6: OpenAI-compatible API, monitoring, feedback
    adhere feedback export adhere.yaml --out next.jsonl   # feedback as the next round's data
    adhere doctor                 # is this machine ready?

Every command parses its arguments, loads the config and calls the same
`run()` the Python API offers. Problems a user can fix print one clear message
and exit with code 2; `--debug` shows the traceback too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adhere.errors import EXIT_USER_ERROR, UserError
from adhere.progress_view import ProgressView

app = typer.Typer(
    help="Instruction-tune a language model to follow your team's instructions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
config_app = typer.Typer(help="Check adhere.yaml, or print its JSON Schema for editors.", no_args_is_help=True)
app.add_typer(config_app, name="config")
feedback_app = typer.Typer(help="Feedback collected by adhere serve.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")

out = Console()
err = Console(stderr=True)
_state = {"debug": False}

ConfigPath = Annotated[Path, typer.Argument(help="The project file, adhere.yaml.", show_default=False)]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one setting, KEY=VALUE with a dotted key (repeatable): --set train.lr=2e-4."),
]


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    _state["debug"] = debug


def _load(path: Path, overrides: list[str] | None):  # -> ProjectConfig
    from adhere.config import load_config

    return load_config(path, overrides or [])


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="Project name (letters, digits, '.', '_', '-'); also the folder to create.",
                                        show_default=False)],
    folder: Annotated[Path | None, typer.Option("--dir", help="Folder to create instead of ./NAME (new or empty).",
                                                show_default=False)] = None,
) -> None:
    """Create a project folder: a commented adhere.yaml and sample data that `adhere run` tunes as they are."""
    from adhere.init import create

    files = create(name, folder if folder is not None else Path(name))
    config, sample = files["config"], files["data"]
    rows = sum(1 for line in sample.read_text(encoding="utf-8").splitlines() if line.strip())
    out.print(f"Created [bold]{config.parent}/[/]: adhere.yaml (the whole project: spec, data, model, training, "
              f"evaluation) and {sample.relative_to(config.parent)} ({rows} sample support answers).")
    out.print(f"Next: [bold]adhere run {config}[/] curates the sample, evaluates the base model, tunes it and "
              "compares base with tuned (a few minutes on a laptop CPU).")
    out.print(f"Then replace {sample} with your own rows, edit the spec in adhere.yaml, and run it again.")


@config_app.command("check")
def config_check(path: ConfigPath, overrides: Overrides = None) -> None:
    """Validate a config file and print the resolved config, every default filled in."""
    config = _load(path, overrides)
    out.print(config.to_yaml(), end="", markup=False, highlight=False)
    err.print(f"[green]ok[/]: {path} is valid")


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of adhere.yaml (for editor validation and completion)."""
    from adhere.config import json_schema

    print(json.dumps(json_schema(), indent=2))


@app.command()
def spec(
    path: ConfigPath,
    overrides: Overrides = None,
    response: Annotated[
        Path | None, typer.Option(help="Check this response file ('-' for stdin) against the spec's constraints.")
    ] = None,
) -> None:
    """Step 1: validate the spec and write workdir/spec/; optionally check a response against it."""
    import adhere.spec

    config = _load(path, overrides)
    run_dir = adhere.spec.run(config)
    table = Table(title=f"spec: {config.spec.task} ({config.spec.output.format})", title_justify="left")
    table.add_column("constraint")
    table.add_column("meaning")
    from adhere.spec.constraints import describe

    for c in config.spec.constraints:
        table.add_row(escape(c.label), escape(describe(c.id)))
    if config.spec.constraints:
        out.print(table)
    else:
        out.print("The spec lists no constraints: responses are checked for nothing but the output format.")
    out.print(f"Wrote {run_dir / 'spec.json'}")
    if response is None:
        return
    text = sys.stdin.read() if str(response) == "-" else _read_text(response)
    results = adhere.spec.check_response(config.spec, text)
    for label, passed in results:
        out.print(f"  {'[green]pass[/]' if passed else '[red]FAIL[/]'}  {escape(label)}")
    failed = sum(not p for _, p in results)
    out.print(f"{len(results) - failed} of {len(results)} constraints met")
    if failed:
        raise typer.Exit(1)


@app.command(no_args_is_help=True)
def data(
    target: Annotated[str, typer.Argument(help="adhere.yaml to curate, or 'inspect'.", show_default=False)],
    inspect_path: Annotated[Path | None, typer.Argument(help="With 'inspect': adhere.yaml.", show_default=False)] = None,
    overrides: Overrides = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit with code 1 if any row is rejected.")] = False,
    n: Annotated[int, typer.Option("--n", help="inspect: how many examples to show.")] = 3,
    plain: Annotated[bool, typer.Option("--plain", help="inspect: mark trained tokens with [[ ]] instead of color.")] = False,
) -> None:
    """Step 2: curate data.sources into workdir/data/; or `adhere data inspect adhere.yaml` to see which tokens train."""
    if target == "inspect":
        if inspect_path is None:
            raise UserError("usage: adhere data inspect adhere.yaml [--n 3] [--plain]")
        _inspect(inspect_path, overrides, n, plain)
        return
    if inspect_path is not None:
        raise UserError(f"unexpected argument {str(inspect_path)!r}: use `adhere data adhere.yaml` or `adhere data inspect adhere.yaml`")
    import adhere.data
    from adhere.data.report import split_counts

    config = _load(Path(target), overrides)
    run_dir = adhere.data.run(config)
    stats = json.loads((run_dir / "stats.json").read_text())
    out.print(f"{stats['rows_in']} rows in: [green]{split_counts(stats)}[/], [yellow]{stats['rejected']} rejected[/]")
    if stats["rejected_by_rule"]:
        table = Table("rule", "rows", title="rejected (reasons per row in rejected.jsonl)", title_justify="left")
        for rule, count in stats["rejected_by_rule"].items():
            table.add_row(rule, str(count))
        out.print(table)
    warning = stats.get("diversity", {}).get("warning")
    if warning:
        out.print(f"[yellow]warning[/]: {escape(warning)}")
    written = ["train.jsonl", "valid.jsonl", "eval.jsonl"] if stats["valid"] else ["train.jsonl", "eval.jsonl"]
    out.print(f"Wrote {run_dir}/: {', '.join(written)}, rejected.jsonl, stats.json, card.md")
    if strict and stats["rejected"]:
        raise typer.Exit(1)


@app.command()
def synth(path: ConfigPath, overrides: Overrides = None) -> None:
    """Step 2, synthetic: generate instruction data with a teacher model (synth section); writes workdir/synth/."""
    import adhere.synth

    config = _load(path, overrides)
    run_dir = adhere.synth.run(config, log=lambda message: err.print(escape(message), highlight=False))
    stats = json.loads((run_dir / "stats.json").read_text())
    usage = stats["teacher_usage"]
    out.print(f"{stats['candidates']} candidates: [green]{stats['kept']} kept[/], [yellow]{stats['rejected']} rejected[/]; "
              f"teacher: {usage['calls']} calls, {usage['tokens']} tokens, {usage['cached']} from the cache")
    if stats["rejected_by_rule"] or stats["seeds"]["dropped"]:
        table = Table("rule", "count", title="dropped (reasons per row in rejected.jsonl)", title_justify="left")
        for rule, count in stats["seeds"]["dropped_by_rule"].items():
            table.add_row(f"seed file: {rule}", str(count))
        for rule, count in stats["rejected_by_rule"].items():
            table.add_row(rule, str(count))
        out.print(table)
    if usage["stopped"]:
        out.print(f"[yellow]stopped early[/]: {escape(usage['stopped'])}; what was made is kept, and a rerun resumes")
    synth_file = run_dir / "synth.jsonl"
    out.print(f"Wrote {run_dir}/: synth.jsonl, rejected.jsonl, stats.json")
    if str(synth_file) not in {s.path for s in config.data.sources}:
        out.print(f"To train on it, add it to data.sources: - path: {synth_file}")


def _inspect(path: Path, overrides: list[str] | None, n: int, plain: bool) -> None:
    from adhere.data.inspect import inspect

    config = _load(path, overrides)
    for block in inspect(config, n, color=not plain):
        head, _, body = block.partition("\n")
        out.print(f"[bold]{escape(head)}[/]")
        if plain:
            out.print(body, markup=False, highlight=False)
        else:
            out.print(body, highlight=False)
        out.print()


@app.command()
def train(
    path: ConfigPath,
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint (train.save_every).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count examples, tokens and steps; time a few steps; train nothing.")] = False,
) -> None:
    """Step 4: tune the base model on workdir/data/train.jsonl (LoRA or full); writes workdir/train/."""
    config = _load(path, overrides)
    if dry_run:
        from adhere.train.estimate import estimate

        err.print("Timing a few steps on the real model and data...")
        facts = estimate(config)
        table = Table(show_header=False, box=None)
        for key, value in facts.items():
            table.add_row(key.replace("_", " "), str(value))
        out.print(table)
        return
    _train_stage(config, "train", resume)


@app.command("self-pairs")
def self_pairs(path: ConfigPath, overrides: Overrides = None) -> None:
    """Step 4b: pairs from the SFT model's own answers, graded against the references (dpo.self_pairs); writes workdir/self_pairs/."""
    import adhere.self_pairs

    run_dir = adhere.self_pairs.run(_load(path, overrides), log=lambda message: err.print(escape(message), highlight=False))
    stats = json.loads((run_dir / "stats.json").read_text())
    usage = stats["sampling"]
    out.print(f"{stats['prompts']} prompts: [green]{stats['kept']} pairs kept[/] ({stats['pairs_valid']} held out), "
              f"[yellow]{stats['dropped']} dropped[/]; mean score of samples {stats['mean_sample_score']}, of references "
              f"{stats['mean_reference_score']}; {usage['calls']} answers sampled, {usage['cached']} from the cache")
    if stats["dropped_by_rule"]:
        table = Table("rule", "count", title="dropped (reasons per prompt in rejected.jsonl)", title_justify="left")
        for rule, count in stats["dropped_by_rule"].items():
            table.add_row(rule, str(count))
        out.print(table)
    if usage["stopped"]:
        out.print(f"[yellow]stopped early[/]: {escape(usage['stopped'])}; what was made is kept, and a rerun resumes")
    out.print(f"Wrote {run_dir}/: pairs.jsonl, rejected.jsonl, stats.json; `adhere dpo` trains on them")


@app.command()
def dpo(
    path: ConfigPath,
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint (dpo.save_every).")] = False,
) -> None:
    """Step 4b: preference-tune (DPO) the model `adhere train` wrote on its pairs (data.pairs, dpo.self_pairs); writes workdir/dpo/."""
    _train_stage(_load(path, overrides), "dpo", resume)


@app.command()
def grpo(
    path: ConfigPath,
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint (grpo.save_every).")] = False,
) -> None:
    """Step 4c: reinforce (GRPO) the tuned model, its sampled answers scored by grpo.rewards; writes workdir/grpo/."""
    _train_stage(_load(path, overrides), "grpo", resume)


def _train_stage(config, stage: str, resume: bool) -> None:  # config: ProjectConfig
    import adhere.train

    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun or accelerate launch, one process reports
    with ProgressView(err, enabled=main_process) as view:
        view.update(stage, f"{stage}: loading", 0, None)

        def log(metrics: dict) -> None:
            if metrics.get("phase") == "reference":  # DPO scores every pair with the starting model first
                view.update(stage, f"{stage}: reference log-probs of the starting model", metrics["done"], metrics["total"])
                return
            text = f"{stage}: loss {metrics['loss']:.4f}  lr {metrics['lr']:.2e}  {metrics['tokens_per_s']:.0f} trained tok/s"
            if "reward" in metrics:  # GRPO: the sampled answers' mean reward, and groups that taught nothing
                text = (f"{stage}: reward {metrics['reward']:.3f}  same-score groups {metrics['zero_std_groups']:.0%}  "
                        f"answer {metrics['completion_tokens']:.0f} tok  lr {metrics['lr']:.2e}")
            if "reward_accuracy" in metrics:
                text += f"  reward accuracy {metrics['reward_accuracy']:.2f}"
            if "valid_loss" in metrics:
                text += f"  validation {metrics['valid_loss']:.4f}"
            view.update(stage, text, metrics["step"], metrics["total_steps"])

        run_dir = adhere.train.run(config, log=log, resume=resume, stage=stage)
    if not main_process:
        return
    summary = json.loads((run_dir / "summary.json").read_text())
    valid_text = f", validation loss {summary['final_valid_loss']:.4f}" if summary["final_valid_loss"] is not None else ""
    if "final_valid" in summary:
        valid_text += f", held-out reward accuracy {summary['final_valid']['reward_accuracy']:.2f}"
    if summary["best_step"] is not None and summary["best_step"] != summary["steps"]:
        valid_text += f" (wrote the best, step {summary['best_step']}: {summary['best_valid_loss']:.4f})"
    items = {"dpo": "pairs", "grpo": "prompts"}.get(stage, "examples")
    if stage == "grpo":
        rewards = summary["final_rewards"]
        out.print(f"{summary['steps']} steps on {summary['train_examples']} prompts in {summary['seconds']:.0f} s: mean reward "
                  f"{rewards['first']:.3f} at step 1, {rewards['last']:.3f} over the last {rewards['last_steps']} steps; "
                  f"best and worst answers in {run_dir}/samples.jsonl")
    else:
        out.print(
            f"{summary['steps']} steps on {summary['train_examples']} {items} in {summary['seconds']:.0f} s: "
            f"train loss {summary['final_train_loss']:.4f}{valid_text}"
        )
    out.print(f"Wrote {run_dir}/ ({'adapter' if config.train.method == 'lora' else 'model'}/, metrics.jsonl, summary.json)")


@app.command()
def run(
    path: ConfigPath,
    overrides: Overrides = None,
    force: Annotated[list[str] | None, typer.Option("--force", help="Redo this stage even if it is current (repeatable): synth, spec, data, baseline, train, self_pairs, dpo, grpo, eval.")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Then serve the tuned model (adhere serve).")] = False,
) -> None:
    """All steps: (synth,) spec, data, baseline eval, train, eval; skips what is current; prints base vs tuned."""
    import time

    from adhere import pipeline

    config = _load(path, overrides)
    started = time.perf_counter()
    with ProgressView(err) as view:
        stage_started, stage_name = [time.perf_counter()], [""]

        def report(event: str, details: dict) -> None:
            head = f"[{details.get('index', '')}/{details.get('total', '')}] {details.get('title', '')}"
            if event == "skip":
                view.print(f"{head}: [dim]current, skipped[/] (--force {details['name']} redoes it)")
            elif event == "stage":
                stage_started[0], stage_name[0] = time.perf_counter(), details["name"]
                view.print(f"[bold]{head}[/] ({details['name']})")
            elif event == "done":
                view.print(f"{head}: done in {time.perf_counter() - stage_started[0]:.0f} s")
            elif event == "log":
                view.print(f"  {escape(details['message'])}", highlight=False)
            elif event == "train" and details.get("phase") == "reference":
                view.update("train", "  dpo: reference log-probs of the starting model", details["done"], details["total"])
            elif event == "train" and "reward" in details:  # grpo
                text = f"  {stage_name[0]}: reward {details['reward']:.3f}, same-score groups {details['zero_std_groups']:.0%}"
                view.update("train", text, details["step"], details["total_steps"])
            elif event == "train":
                text = f"  {stage_name[0]}: loss {details['loss']:.3f}" + (f", validation {details['valid_loss']:.3f}" if "valid_loss" in details else "")
                view.update("train", text, details["step"], details["total_steps"])
            elif event == "eval":
                view.update(f"{stage_name[0]}: {details['label']}", f"  {details['label']}", details["done"], details["total"])

        eval_dir = pipeline.run(config, report, tuple(force or ()))
    document = json.loads((eval_dir / "results.json").read_text())
    for suite in document["suites"].values():
        out.print(eval_table(suite, list(document["models"])))
    out.print(f"Done in {time.perf_counter() - started:.0f} s. Report: {eval_dir / 'report.html'}")
    if serve:
        from adhere.serve import run as serve_run

        serve_run(config)


@app.command("eval")
def eval_(path: ConfigPath, overrides: Overrides = None) -> None:
    """Step 5: evaluate base vs tuned on eval.suites; writes workdir/eval/ (results.json, samples.jsonl, report.html)."""
    from adhere.eval import run as eval_run

    config = _load(path, overrides)
    with ProgressView(err) as view:
        run_dir = eval_run(config, log=lambda message: view.print(escape(message), highlight=False),
                           progress=lambda label, done, total: view.update(label, f"  {label}", done, total))
    document = json.loads((run_dir / "results.json").read_text())
    for suite in document["suites"].values():
        out.print(eval_table(suite, list(document["models"])))
    out.print(f"Wrote {run_dir}/ (results.json, samples.jsonl, report.html)")


def eval_table(suite: dict, models: list[str]) -> Table:
    """One suite's headline metrics, a column per model with its 95% CI, then the change of each compared pair."""
    counts = suite["counts"]
    skipped = sum(counts["skipped"].values())
    caption = f"{counts['scored']} of {counts['prompts']} prompts scored" + (f", {skipped} skipped" if skipped else "")
    table = Table(title=f"{suite['title']} ({caption})", title_justify="left")
    table.add_column("metric")
    for model in models:
        table.add_column(model, justify="right")
    pairs = list(dict.fromkeys((c["baseline"], c["model"]) for m in suite["metrics"].values()
                               for c in (m.get("comparisons") or [m["comparison"]] if m.get("comparison") else [])))
    for baseline, model in pairs:  # one 'change' column for two models; with more, one per compared pair
        table.add_column("change" if len(pairs) == 1 else f"{model} vs {baseline}", justify="right")
    for metric in suite["metrics"].values():
        cells = [_metric_cell(metric["models"].get(model), metric["kind"]) for model in models]
        found = {(c["baseline"], c["model"]): c for c in metric.get("comparisons") or [metric.get("comparison") or {}] if c}
        table.add_row(metric["label"], *cells, *(_change_cell(found.get(pair), metric["kind"]) for pair in pairs))
    return table


def _metric_cell(entry: dict | None, kind: str) -> str:
    if entry is None:
        return "-"
    show = (lambda v: f"{100 * v:.1f}") if kind == "rate" else (lambda v: f"{v:.3f}" if kind == "score" else f"{v:.2f}")
    ci = f" [{show(entry['ci'][0])}, {show(entry['ci'][1])}]" if entry.get("ci") else ""
    return f"{show(entry['value'])}{ci}"


def _change_cell(comparison: dict | None, kind: str) -> str:
    if not comparison:
        return ""
    # Same precision as the cells: rates in points with one decimal, scores (0-1) with three.
    delta = f"{100 * comparison['delta']:+.1f} pts" if kind == "rate" else (
        f"{comparison['delta']:+.3f}" if kind == "score" else f"{comparison['delta']:+.2f}")
    p = comparison.get("p_value")
    return delta if p is None else f"{delta}{' *' if p < 0.05 else ''} (p={p:.3g})"


@app.command()
def export(
    path: ConfigPath,
    overrides: Overrides = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder to write (default workdir/export).")] = None,
) -> None:
    """Merge the trained adapter into the base model and write a folder transformers loads without adhere."""
    from adhere.train.export import run as export_run

    config = _load(path, overrides)
    folder = export_run(config, out_dir)
    out.print(f"Wrote {folder}/ (safetensors, tokenizer with the training chat template, README.md model card)")


@app.command()
def serve(
    path: ConfigPath,
    overrides: Overrides = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Serve without API keys (binds 127.0.0.1 only).")] = False,
) -> None:
    """Step 6: serve the tuned model as an OpenAI-compatible API with monitoring, feedback and a dashboard."""
    from adhere.serve import run as serve_run

    serve_run(_load(path, overrides), insecure=insecure)


@feedback_app.command("export")
def feedback_export(
    path: ConfigPath,
    out_path: Annotated[Path, typer.Option("--out", help="JSONL file of training records to write.")],
    pairs_path: Annotated[Path | None, typer.Option(
        "--pairs", help="Also write preference pairs to this JSONL file (corrections over what they correct, "
                        "approved over rejected answers), for data.pairs.")] = None,
    overrides: Overrides = None,
) -> None:
    """Write served answers' feedback as canonical training records (corrections and approved answers)."""
    from adhere.serve import export_feedback

    written = export_feedback(_load(path, overrides), out_path, pairs_path)
    summary_path = written.with_name(f"{written.stem}.summary.json")
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        out.print(", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in summary.items()
                            if isinstance(value, (int, float, str))))
    out.print(f"Wrote {written} (add it to data.sources for the next round)")
    if pairs_path is not None:
        out.print(f"Wrote {pairs_path} (add it to data.pairs for preference tuning)")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None


@app.command()
def doctor(quick: Annotated[bool, typer.Option("--quick", help="Skip loading the embedded model.")] = False) -> None:
    """Check Python, packages, CPU/GPU, disk and the embedded model; say how to fix each problem."""
    from adhere.doctor import run_checks

    if not quick:
        err.print("Loading the embedded model and asking it one question (the first run converts it, ~20 s)...")
    checks = run_checks(load_model=not quick)
    marks = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
    table = Table(show_header=False, box=None, pad_edge=False)
    for check in checks:
        table.add_row(marks[check.status], f"[bold]{check.name}[/]", escape(check.detail))
    out.print(table)
    fixes = [c for c in checks if c.fix]
    for check in fixes:
        out.print(f"[bold]{check.name}[/]: {escape(check.fix)}")
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


def main() -> None:
    """Entry point: run the app; user errors print one message and exit 2."""
    try:
        app()
    except UserError as exc:
        if _state["debug"]:
            raise
        err.print(f"[red]error[/]: {escape(str(exc))}", highlight=False)
        sys.exit(EXIT_USER_ERROR)
