"""Step 6, starting the server: which weights, which keys, which address; what it writes.

A server without keys needs --insecure and then listens on loopback only; missing weights, a
taken port and a model that fails to load are errors that say what to do; the tuned adapter and
the exported folder are served with the answers LocalBackend gives; hash-only storage keeps no text.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_serve_support import (  # noqa: F401  (fixtures)
    API_KEY,
    auth,
    chat,
    client,
    db_rows,
    long_tiny_dir_fixture,
    one_torch_thread_fixture,
    start_server,
    write_project,
)

from adhere.errors import UserError


def load(path: Path, *overrides: str) -> Any:
    from adhere.config import load_config

    return load_config(path, list(overrides))


def test_keys_are_required_unless_insecure_which_binds_loopback(tmp_path: Path, long_tiny_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from adhere.serve import Server

    monkeypatch.delenv("ADHERE_API_KEYS", raising=False)
    path = write_project(tmp_path, long_tiny_dir)
    with pytest.raises(UserError, match=r"no API keys. Export ADHERE_API_KEYS=.*--insecure"):
        Server(load(path, "serve.api_key_hashes=[]"), port=0)
    with Server(load(path, "serve.api_key_hashes=[]", "serve.host=0.0.0.0"), port=0, insecure=True, quiet=True) as server:
        assert server.url.startswith("http://127.0.0.1:")  # not 0.0.0.0: --insecure listens on loopback only
        assert httpx.get(f"{server.url}/v1/models").status_code == 200
        served = json.loads((tmp_path / "runs" / "p" / "serve" / "served.json").read_text())
        assert served["insecure"] is True and served["url"] == server.url
    monkeypatch.setenv("ADHERE_API_KEYS", "from-env-1, from-env-2")  # added to the configured digests
    with Server(load(path), port=0, quiet=True) as server:
        for key in (API_KEY, "from-env-2"):
            assert httpx.get(f"{server.url}/v1/models", headers=auth(key)).status_code == 200
        assert httpx.get(f"{server.url}/v1/models", headers=auth("from-env")).status_code == 401


def test_settings_that_cannot_work_are_user_errors(tmp_path: Path, long_tiny_dir: Path) -> None:
    from adhere.serve import Server

    path = write_project(tmp_path, long_tiny_dir)
    with pytest.raises(UserError, match=r"holds no trained weights .*run `adhere train p` first"):
        Server(load(path, "serve.weights=tuned"), port=0)
    with pytest.raises(UserError, match=r"holds no exported model; run `adhere export p` first"):
        Server(load(path, "serve.weights=export"), port=0)
    with pytest.raises(UserError, match="expected a SHA-256 hex digest"):
        load(path, f"serve.api_key_hashes=[{API_KEY}]")  # a key where its digest belongs
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(UserError, match=r"cannot listen on 127.0.0.1:\d+ .*--set serve.port="):
            Server(load(path), port=taken.getsockname()[1])
    finally:
        taken.close()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((long_tiny_dir / "config.json").read_text())  # no weights
    with pytest.raises(UserError, match="has no model weights"):  # raised by the worker, after the socket opened
        Server(load(path, f"model.base={broken}"), port=0, quiet=True).start()


def test_the_tuned_adapter_and_the_exported_model_answer_as_localbackend(tmp_path: Path, long_tiny_dir: Path) -> None:
    import adhere.train
    from adhere.generation import GenerationParams, LocalBackend
    from adhere.train.export import run as export

    data = tmp_path / "runs" / "p" / "data"
    data.mkdir(parents=True)
    pairs = [("What is 2+2?", "Four."), ("Name the capital of France.", "Paris.")] * 4
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "meta": {}} for q, a in pairs]
    for name in ("train.jsonl", "eval.jsonl"):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = write_project(tmp_path, long_tiny_dir, "  weights: tuned\n")
    path.write_text(path.read_text() + "train: {max_steps: 3, lr: 0.05, precision: fp32, lora: {r: 4, dropout: 0}}\n")
    config = load(path)
    adapter = adhere.train.run(config) / "adapter"
    params = GenerationParams(max_new_tokens=8, temperature=1.0, seed=1)
    expected = LocalBackend.load(config.model, adapter).generate([chat("What is 2+2?")], params)[0].text
    base = LocalBackend.load(config.model).generate([chat("What is 2+2?")], params)[0].text
    assert expected != base  # the adapter changed the answer, so serving the base by mistake would show
    for weights in ("tuned", "export"):
        if weights == "export":
            export(config)
        with server_for(load(path, f"serve.weights={weights}")) as server:
            answer = client(server).chat.completions.create(model="p", messages=chat("What is 2+2?"), max_tokens=8,
                                                            temperature=1.0, seed=1)
            assert answer.choices[0].message.content == expected
            assert server.state.run_id.startswith(f"{weights}-")
        served = json.loads((tmp_path / "runs" / "p" / "serve" / "served.json").read_text())
        assert served["weights"] == weights and served["train_lineage"]["sha256"] == hashlib.sha256(
            (tmp_path / "runs" / "p" / "train" / "lineage.json").read_bytes()).hexdigest()
    runs = {r["run_id"] for r in db_rows(tmp_path, "SELECT run_id FROM requests")}
    assert len(runs) == 2  # each answer says which weights gave it


def server_for(config: Any) -> Any:
    from adhere.serve import Server

    return Server(config, port=0, quiet=True)


def test_hash_only_storage_keeps_no_text_and_exports_nothing(tmp_path: Path, long_tiny_dir: Path) -> None:
    from adhere.serve import export_feedback
    from adhere.serve.monitor import sha256_text

    with start_server(tmp_path, long_tiny_dir, "  store_prompts: hash\n") as server:
        answer = httpx.post(f"{server.url}/v1/chat/completions", headers=auth(),
                            json={"model": "p", "messages": chat("My card is 4111 1111 1111 1111"), "max_tokens": 3}).json()
        httpx.post(f"{server.url}/v1/feedback", headers=auth(), json={"completion_id": answer["id"], "rating": "up"})
        config = server.state.config
    [row] = db_rows(tmp_path, "SELECT messages, messages_sha256, response, response_sha256 FROM requests")
    assert row["messages"] is None and row["response"] is None
    assert row["messages_sha256"] == sha256_text(chat("My card is 4111 1111 1111 1111"))
    assert row["messages_sha256"] == hashlib.sha256(
        json.dumps(chat("My card is 4111 1111 1111 1111"), sort_keys=True).encode()).hexdigest()
    assert row["response_sha256"] == hashlib.sha256(("\n" * 3).encode()).hexdigest()
    out = export_feedback(config, tmp_path / "new.jsonl")
    assert out.read_text() == ""
    assert json.loads((tmp_path / "new.summary.json").read_text())["counts"] == {"no_prompt": 1}


def test_export_without_a_monitor_database_says_to_serve_first(tmp_path: Path, long_tiny_dir: Path) -> None:
    from adhere.serve import export_feedback

    with pytest.raises(UserError, match=r"monitor.db: no monitor database; start the server with `adhere serve`"):
        export_feedback(load(write_project(tmp_path, long_tiny_dir)), tmp_path / "out.jsonl")


def test_engine_vllm_without_a_vllm_environment_exits_2_naming_the_setting(
        tmp_path: Path, long_tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """serve.engine vllm where `make vllm` never ran: exit 2 with what to do, and the port is free again."""
    import sys

    from adhere.cli import main

    path = write_project(tmp_path, long_tiny_dir)
    missing = tmp_path / "no-venv" / "bin" / "python"
    monkeypatch.setenv("ADHERE_VLLM_PYTHON", str(missing))
    monkeypatch.setenv("COLUMNS", "300")  # rich wraps at the terminal width; keep the message on one line
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    monkeypatch.setattr(sys, "argv", ["adhere", "serve", str(path), "--insecure", "--set", "serve.engine=vllm",
                                      "--set", f"serve.port={port}"])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert f"no vLLM environment: no Python at {missing} ($ADHERE_VLLM_PYTHON)" in err and "make vllm" in err
    socket.create_server(("127.0.0.1", port)).close()  # nothing listens any more
