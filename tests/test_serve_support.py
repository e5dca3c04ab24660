"""Set-up shared by the test_serve* files (no tests here): a tiny model, a project, a live server on loopback.

A test module uses the fixtures by importing `long_tiny_dir_fixture` and `one_torch_thread_fixture`
(registered as `long_tiny_dir` and `one_torch_thread`; the latter is autouse, so importing it
turns it on for that module only).

The tiny random Llama of tests/tiny.py, saved with 4,096 positions instead of 256 so a request can
generate for seconds (about 1-2 ms a token on 2 cores), long enough to disconnect mid-stream or
fill the queue. Its tied embeddings make greedy decoding repeat the prompt's last token: every
greedy answer is "\\n" repeated (ChatML's generation prompt ends with a newline), which gives
constraint checks with known results (max_words passes, min_words fails).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

API_KEY = "test-key-6f1d2c"
SPEC_YAML = "spec:\n  constraints: [{id: max_words, n: 5}, {id: min_words, n: 1}]\n"
LONG_POSITIONS = 4096


@pytest.fixture(scope="module", autouse=True, name="one_torch_thread")
def one_torch_thread_fixture() -> Any:
    """Tiny-model math on one thread, restored after the module.

    A 32-wide matmul is microseconds of work; with two intra-op threads on a 2-core machine that
    other processes also use, each op waits for a descheduled thread: 8 prompts x 48 tokens took
    3.2 s on two threads and 0.37 s on one (load average 5).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", name="long_tiny_dir")
def long_tiny_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model of `tiny_dir` (same seed, same weights), allowed 4,096 positions."""
    from tiny import save_tiny_model

    folder = save_tiny_model(tmp_path_factory.mktemp("serve-tiny") / "model")
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = LONG_POSITIONS  # rotary embeddings need no weights per position
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def write_project(folder: Path, model_dir: Path, serve_yaml: str = "", spec_yaml: str = SPEC_YAML) -> Path:
    """An adhere.yaml serving `model_dir` as the base model, accepting API_KEY (by its digest)."""
    from adhere.serve.auth import key_digest

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "adhere.yaml"
    serve = f"serve:\n  weights: base\n  api_key_hashes: [{key_digest(API_KEY)}]\n" + serve_yaml
    path.write_text(f"name: p\nmodel: {{base: {model_dir}}}\n{spec_yaml}{serve}")
    return path


def start_server(folder: Path, model_dir: Path, serve_yaml: str = "", spec_yaml: str = SPEC_YAML,
                 insecure: bool = False) -> Any:
    """A started `adhere.serve.Server` on a free loopback port, the model loaded."""
    from adhere.config import load_config
    from adhere.serve import Server

    config = load_config(write_project(folder, model_dir, serve_yaml, spec_yaml))
    return Server(config, port=0, quiet=True, insecure=insecure).start()


def client(server: Any, key: str = API_KEY) -> Any:
    """The official openai client pointed at `server`, without retries (a test sees every error)."""
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def db_rows(folder: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """Rows of the monitor database of the project in `folder`."""
    conn = sqlite3.connect(folder / "runs" / "p" / "serve" / "monitor.db")
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
