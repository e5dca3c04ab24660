"""Step 6, deploy and monitor: the tuned model behind an OpenAI-compatible API.

    ADHERE_API_KEYS=my-key adhere serve adhere.yaml      # http://127.0.0.1:8000/v1
    adhere serve adhere.yaml --insecure                   # no keys: loopback only
    adhere feedback export adhere.yaml --out new_data.jsonl

    from adhere.serve import run, export_feedback, Server
    with Server(config, insecure=True, port=0) as server:  # in a background thread, e.g. for tests
        print(server.url)

Writes `workdir/serve/`: config.yaml and env.json (as every stage), served.json (which weights,
their run id and the training lineage they came from) and monitor.db (every request and all
feedback). The socket is bound before the model loads, so /health answers at once and /ready
turns 200 when the model is in memory; a model that fails to load stops the server with its error.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from adhere import runs
from adhere.errors import UserError

if TYPE_CHECKING:
    from adhere.config import ProjectConfig
    from adhere.models.config import ModelConfig

log = logging.getLogger("adhere.serve")

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 30.0  # for `Server.start`: uvicorn listens within a second; a loaded CI box may take longer
GRACEFUL_SHUTDOWN_S = 5  # streams still open on Ctrl-C get this long to finish


def run(config: ProjectConfig, *, insecure: bool = False) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM); raise UserError for bad settings or a model that fails to load."""
    Server(config, insecure=insecure).serve()


def export_feedback(config: ProjectConfig, out: Path) -> Path:
    """Write the feedback in workdir/serve/monitor.db as training records (see feedback.py); return `out`."""
    from adhere.serve.feedback import export_feedback as export

    return export(config, Path(out))


class Server:
    """One server: settings checked, stage folder written and socket bound on construction."""

    def __init__(self, config: ProjectConfig, *, insecure: bool = False, port: int | None = None,
                 quiet: bool = False) -> None:
        import uvicorn

        from adhere.serve.app import create_app
        from adhere.serve.auth import Keys
        from adhere.serve.engine import Engine
        from adhere.serve.monitor import Metrics, Monitor
        from adhere.serve.state import ServerState
        from adhere.serve.vllm_engine import VllmEngine

        cfg = config.serve
        keys = Keys.from_config(cfg, os.environ, insecure=insecure)
        if not keys.digests and not insecure:
            raise UserError(
                f"serve: no API keys. Export {cfg.api_keys_env}=<key>[,<key>...] or list SHA-256 digests of keys in "
                "serve.api_key_hashes; or pass --insecure to serve without keys, on 127.0.0.1 only"
            )
        host = LOOPBACK if insecure else cfg.host
        if insecure and cfg.host != LOOPBACK:
            log.warning("--insecure: listening on %s, not serve.host=%s", LOOPBACK, cfg.host)
        self._load, paths, kind = served_weights(config)
        run_dir = runs.start_stage(config, "serve")
        self.sock = _bind(host, cfg.port if port is None else port)
        self.engine = (VllmEngine if cfg.engine == "vllm" else Engine)(batch_size=cfg.batch_size, max_queue=cfg.max_queue)
        # vLLM's server takes 30-110 s to start on 2 CPU cores; the local engine loads in seconds
        self.start_timeout_s = START_TIMEOUT_S + (cfg.vllm.startup_timeout_s if cfg.engine == "vllm" else 0)
        metrics = Metrics(self.engine.depth, self.engine.running)
        self.engine.on_batch = metrics.batch_size.observe
        self.monitor = Monitor(run_dir / "monitor.db", store_prompts=cfg.store_prompts, metrics=metrics)
        run_id = f"{kind}-{_fingerprint(paths)[:12]}"
        self.state = ServerState(config=config, keys=keys, engine=self.engine, monitor=self.monitor, metrics=metrics,
                                 model_name=cfg.model_name or config.name, run_id=run_id, info={"weights": kind, "engine": cfg.engine})
        runs.write_json_atomic(run_dir / "served.json", _served(config, kind, paths, run_id, self.url, insecure))
        self.app = create_app(self.state)
        self._uvicorn = uvicorn.Server(uvicorn.Config(
            self.app, log_config=_log_config(quiet), access_log=not quiet, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            lifespan="off",  # nothing to set up per event loop: the engine and database are made here
        ))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's root URL; the OpenAI base URL is `url + '/v1'`."""
        host, port = self.sock.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def serve(self) -> None:
        """Load the model and serve in this thread until interrupted."""
        self.engine.start(self._load, on_failure=self._load_failed)
        log.info("serving %s (run %s) at %s/v1", self.state.model_name, self.state.run_id, self.url)
        try:
            self._uvicorn.run(sockets=[self.sock])
        finally:
            self._close()
        if self.engine.load_error is not None:
            raise self.engine.load_error

    def start(self, *, wait_ready: bool = True) -> Server:
        """Serve from a background thread; return once listening (and, with `wait_ready`, once the model is loaded)."""
        if self._thread is not None:  # already started (e.g. `with Server(...).start() as server`)
            return self
        self.engine.start(self._load, on_failure=self._load_failed)
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self.sock]},
                                        name="adhere-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not (self._uvicorn.started and (self.engine.ready or not wait_ready)):
            if self.engine.load_error is not None:
                self.stop()
                raise self.engine.load_error
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError(f"the server did not start within {self.start_timeout_s:g} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop a server started with `start`: finish open responses (briefly), close the database."""
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(GRACEFUL_SHUTDOWN_S + 5)
        self._close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _load_failed(self, exc: BaseException) -> None:
        self._uvicorn.should_exit = True

    def _close(self) -> None:
        self.engine.close()
        self.monitor.close()
        self.sock.close()


def served_weights(config: ProjectConfig) -> tuple[Callable[[], Any], list[Path], str]:
    """How to load the weights `serve.weights` names on `serve.engine`, the files that identify them, and the kind.

    UserError when the weights are missing.
    """
    from adhere.generation.weights import is_adapter, tuned_weights
    from adhere.models.loader import resolve

    cfg, kind = config.serve, config.serve.weights
    base = resolve(config.model)
    base_paths = [base.path] if base.path is not None else []
    model: ModelConfig | Path = config.model
    adapter: Path | None = None
    if kind == "base":
        paths = base_paths
    elif kind == "export":
        model = config.stage_dir("export")
        if not (model / "config.json").is_file():
            raise UserError(f"serve.weights is 'export' but {model} holds no exported model; run "
                            f"`adhere export {config.name}` first, or set serve.weights: tuned")
        paths = [model]
    else:
        found = tuned_weights(config, needed_by="serve.weights is 'tuned'",
                              otherwise=", or serve the base model: --set serve.weights=base")
        model, adapter = (config.model, found) if is_adapter(found) else (found, None)
        paths = [*base_paths, found] if adapter is not None else [found]
    if cfg.engine == "vllm":
        return (lambda: _vllm_backend(config, model, adapter)), paths, kind
    from adhere.generation import LocalBackend

    return (lambda: LocalBackend.load(model, adapter, batch_size=cfg.batch_size)), paths, kind


def _vllm_backend(config: ProjectConfig, model: ModelConfig | Path, adapter: Path | None) -> Any:
    """A VllmBackend (not started) for the served weights; a LoRA adapter is served merged (see refs.merged_export)."""
    from adhere.generation.refs import merged_export
    from adhere.generation.vllm import VllmBackend
    from adhere.models.config import ModelConfig

    if adapter is not None:
        model = merged_export(config)
    served = model if isinstance(model, ModelConfig) else ModelConfig(base=str(model))
    return VllmBackend(served, config.serve.vllm, log_path=config.stage_dir("serve") / "vllm.log",
                       max_num_seqs=config.serve.batch_size)


def _fingerprint(paths: list[Path]) -> str:
    from adhere.generation.local import files_fingerprint

    return files_fingerprint(paths) if paths else hashlib.sha256(b"unresolved").hexdigest()


def _served(config: ProjectConfig, kind: str, paths: list[Path], run_id: str, url: str, insecure: bool) -> dict[str, Any]:
    """served.json: what this server runs, traced back to the training run (by the hash of its lineage.json)."""
    lineage = config.stage_dir("train") / "lineage.json"
    return {
        "model": config.serve.model_name or config.name, "run_id": run_id, "weights": kind,
        "engine": config.serve.engine,
        "paths": [str(p) for p in paths], "base": config.model.base, "url": url, "insecure": insecure,
        "train_lineage": {"path": str(lineage), "sha256": runs.file_hash(lineage)} if lineage.is_file() else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the model loads; UserError naming serve.port when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"serve.host/serve.port: cannot listen on {host}:{port} ({exc.strerror}); choose another "
                        "port with --set serve.port=8001, or stop the process using it") from None
    return sock


def _log_config(quiet: bool) -> dict[str, Any]:
    """uvicorn's logging, with adhere's server log beside it."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    level = "WARNING" if quiet else "INFO"
    config["loggers"]["adhere.serve"] = {"handlers": ["default"], "level": level, "propagate": False}
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        config["loggers"].setdefault(name, {})["level"] = level
    return config
