"""Where the benchmark scripts write their tables: a marked block of docs/benchmarks.md each.

    write_block(HEADING, BEGIN, END, text)   # replaces the block between BEGIN and END, or appends it

A re-run replaces only its own block, so notes written below a block and other scripts' blocks stay.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_block(heading: str, begin: str, end: str, body: str, path: Path = DOCS) -> Path:
    """Put `body` between the markers `begin` and `end` under `heading` (added with the block if missing)."""
    text = path.read_text()
    block = f"{begin}\n{body}\n{end}"
    if begin in text:
        start = text.index(begin)
        text = text[:start] + block + text[text.index(end, start) + len(end):]
    elif heading in text:  # another block of the same script (e.g. another precision) is there: add below it
        text = text.rstrip("\n") + f"\n\n{block}\n"
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    path.write_text(text)
    print(f"wrote {path}")
    return path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_line(*packages: str) -> str:
    """'N CPU cores (CPU name), torch X (T threads), transformers Y, <package> Z...': what a table was measured on."""
    import importlib.metadata

    import torch

    versions = "".join(f", {name} {importlib.metadata.version(name)}" for name in ("transformers", *packages))
    return f"{os.cpu_count()} CPU cores ({cpu_name()}), torch {torch.__version__} ({torch.get_num_threads()} threads){versions}"
