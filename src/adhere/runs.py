"""Run directories: every stage writes into `workdir/<stage>/` how it was made.

Each stage folder holds `config.yaml` (the resolved config that ran),
`env.json` (versions, threads, CPU/GPU, git commit) and `lineage.json`, which
names the files the stage read and wrote with their SHA-256, so a tuned model
can be traced back to the exact data it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adhere.errors import UserError

if TYPE_CHECKING:
    from adhere.config import ProjectConfig

PACKAGES = ("adhere", "torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "safetensors", "pydantic")
CHUNK = 1 << 20  # 1 MiB reads keep hashing a multi-GB checkpoint at disk speed with flat memory


def start_stage(config: ProjectConfig, stage: str) -> Path:
    """Create `workdir/<stage>/` and write `config.yaml` and `env.json` into it."""
    run_dir = stage_folder(config, stage)
    write_text_atomic(run_dir / "config.yaml", config.to_yaml())
    write_json_atomic(run_dir / "env.json", environment())
    return run_dir


def stage_folder(config: ProjectConfig, stage: str) -> Path:
    """`workdir/<stage>/`, created; a workdir that cannot be written is a UserError that says what to change."""
    run_dir = config.stage_dir(stage)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"workdir {config.workdir}: cannot write {run_dir} ({error.strerror or error}); "
                        "set workdir in adhere.yaml (or --set workdir=...) to a folder you can write") from None
    return run_dir


def environment() -> dict[str, Any]:
    """Versions, hardware and the git commit of the working directory."""
    from adhere import hardware

    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "packages": package_versions(),
        "hardware": hardware.describe(),
        "git": git_state(Path.cwd()),
        "argv": sys.argv,
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions of adhere and the libraries it wraps (None when absent)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(folder: Path) -> dict[str, Any] | None:
    """The commit and dirtiness of the git repository containing `folder`, if any."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def file_hash(path: Path) -> str:
    """SHA-256 of a file, or of a folder as the hash of its files' relative paths and hashes."""
    digest = hashlib.sha256()
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{child.relative_to(path).as_posix()}\0{file_hash(child)}\n".encode())
        return digest.hexdigest()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def write_lineage(run_dir: Path, config: ProjectConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> Path:
    """Record what a stage read and wrote, by SHA-256, in `run_dir/lineage.json`."""

    def entry(path: Path) -> dict[str, Any]:
        return {"path": str(path), "sha256": file_hash(path)}

    record = {
        "stage": run_dir.name,
        "project": config.name,
        "config_sha256": hashlib.sha256(config.to_yaml().encode()).hexdigest(),
        "inputs": {name: entry(p) for name, p in inputs.items()},
        "outputs": {name: entry(p) for name, p in outputs.items()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return write_json_atomic(run_dir / "lineage.json", record)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write through a temporary file and rename, so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json_atomic(path: Path, data: Any) -> Path:
    """`write_text_atomic` for JSON, indented for people."""
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
