"""What the adhere-vs-peer benchmarks share: each trainer in a child process of the script, its peak memory,
where its LoRA adapter starts, and a table row with the ratio.

    result = run_child(__file__, "adhere", config_path)   # runs `python <script> --only adhere --config ... --out ...`
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def run_child(script: str, which: str, config_path: Path) -> dict:
    """Run `script --only which` in a fresh process; its JSON result, wall time (imports and model load included),
    and the machine's load average before and after (other work on a shared machine slows whichever child it overlaps)."""
    out, log = config_path.parent / f"{which}.json", config_path.parent / f"{which}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, script, "--only", which, "--config", str(config_path), "--out", str(out)]
    start, load = time.perf_counter(), os.getloadavg()[0]
    with log.open("w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if code != 0:
        sys.exit(f"{which} failed (exit {code}); its output:\n{log.read_text()[-4000:]}")
    return {**json.loads(out.read_text()), "wall_s": time.perf_counter() - start, "load": (load, os.getloadavg()[0])}


def peak_rss_gib() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def adapter_checksum(model) -> float:
    """Sum of |lora_A|: equal in both processes when the adapters start from the same seeded draw."""
    return float(sum(p.detach().abs().sum() for n, p in model.named_parameters() if "lora_A" in n))


def adhere_adapter_start(config_path: Path, section: str) -> float:
    """adapter_checksum of the model adhere's loop starts from for adhere.yaml's `section` (train, dpo, grpo):
    seeded, then built, as `loop.run_loop` does."""
    from accelerate.utils import set_seed

    from adhere.config import load_config
    from adhere.train.model import build_model

    config = load_config(config_path)
    loop = getattr(config, section)
    set_seed(loop.seed)
    return adapter_checksum(build_model(config.model, config.train, "cpu", loop=loop)[0])


def row(name: str, x: float, y: float, fmt: Callable[[float], str], ratio: bool = True) -> str:
    """A markdown row: the name, adhere's value, the peer's, and adhere / peer (or '-')."""
    return f"| {name} | {fmt(x)} | {fmt(y)} | {x / y:.2f}x |" if ratio and y else f"| {name} | {fmt(x)} | {fmt(y)} | - |"
