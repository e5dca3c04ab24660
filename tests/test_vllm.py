"""The vllm engine against a real vLLM CPU server on the embedded model: answers, parity, crashes, no orphans.

    make vllm && .venv/bin/python -m pytest tests/test_vllm.py -q     # ~3 minutes on 2 cores

Greedy parity with LocalBackend for the base model and for a tuned one: a LoRA adapter trained here
(6 steps, ~30 s), which vLLM serves merged (`adhere export`, the default on CPU) and LocalBackend
merges itself. Two servers start in all (~30 s each), plus one that fails to: the Ctrl-C check
stops the tuned model's server rather than starting a third.

Skipped, with the reason, where no vLLM environment exists (`make vllm` creates .venv-vllm/);
ADHERE_REQUIRE_VLLM=1 turns that skip into a failure, for a CI that installs it. The server runs
with one bound thread, a 1 GiB KV cache and without torch.compile (ready in ~30 s instead of ~75 s),
so the tests leave a core to whoever else uses the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from adhere.errors import UserError
from adhere.generation import GenerationParams, LocalBackend, VllmBackend, VllmConfig
from adhere.generation.server_process import group_alive
from adhere.models.config import ModelConfig

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

KEY = "gateway-test-key"
LIGHT = VllmConfig(enforce_eager=True, cpu_threads=1, cpu_kv_cache_gib=1, max_model_len=2048)
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain recursion to a child in two sentences.",
    "List three uses of Python.",
    "Give me one tip for sleeping better.",
    "What is 17 times 3?",
    "Summarize the plot of Cinderella in two sentences.",
    "Translate 'good morning' into Spanish.",
]
CHATS = [[{"role": "user", "content": p}] for p in PROMPTS]
GREEDY = GenerationParams(max_new_tokens=96)
PARITY_FLOOR = 0.75  # measured 8 of 8 identical in float32, base and tuned (docs/benchmarks.md); allows float noise


@pytest.fixture(scope="module")
def vllm_ready() -> None:
    from adhere.generation.vllm import find_python

    try:
        find_python()
    except UserError:
        if os.environ.get("ADHERE_REQUIRE_VLLM") == "1":
            pytest.fail("ADHERE_REQUIRE_VLLM=1 but there is no vLLM environment; run `make vllm`")
        pytest.skip("no vLLM environment (.venv-vllm/ or $ADHERE_VLLM_PYTHON): run `make vllm` to run these tests")


@pytest.fixture(scope="module")
def gateway(vllm_ready: None, tmp_path_factory: pytest.TempPathFactory) -> object:
    """`adhere serve` with serve.engine vllm on the embedded base model, keys required: one vLLM server
    (float32, as LocalBackend on a CPU) for the module's tests, through the gateway and directly."""
    from adhere.config import load_config
    from adhere.serve.stage import Server

    root = tmp_path_factory.mktemp("gateway")
    light = json.dumps(LIGHT.model_dump())
    (root / "adhere.yaml").write_text(
        f"name: gw\nserve:\n  engine: vllm\n  weights: base\n  api_key_hashes: [{hashlib.sha256(KEY.encode()).hexdigest()}]\n"
        f"  max_tokens: 128\n  vllm: {light}\n")
    server = Server(load_config(root / "adhere.yaml"), port=0, quiet=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served(gateway: object) -> VllmBackend:
    """The gateway's VllmBackend, with its server running: the backend as eval and synth use it."""
    return gateway.engine.backend


@pytest.fixture(scope="module")
def local_base(vllm_ready: None) -> list:
    """LocalBackend's greedy answers of the base model to CHATS (float32, one batch)."""
    return LocalBackend.load(ModelConfig(), batch_size=8).generate(CHATS, GREEDY)


@pytest.fixture(scope="module")
def tuned(vllm_ready: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real LoRA adapter on the embedded model and its merged `adhere export` folder: (adapter, export).

    6 steps of batch 4 on 24 rows that answer in one fixed style, lr 5e-3 (fp32): enough to change some
    greedy answers to CHATS, so the parity below is about tuned weights, not the base model again.
    """
    import adhere.train
    import adhere.train.export
    from adhere.config import load_config

    root = tmp_path_factory.mktemp("tuned")
    rows = [{"messages": [{"role": "user", "content": f"Name a fact about the number {n}."},
                          {"role": "assistant", "content": f"Short answer: {n} is {'even' if n % 2 == 0 else 'odd'}."}],
             "meta": {}} for n in range(28)]
    data = root / "runs" / "p" / "data"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    (data / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[24:]))
    (root / "adhere.yaml").write_text("name: p\ntrain:\n  max_steps: 6\n  batch_size: 4\n  lr: 0.005\n"
                                      "  max_length: 64\n  precision: fp32\n")
    config = load_config(root / "adhere.yaml")
    run_dir = adhere.train.run(config)
    return run_dir / "adapter", adhere.train.export.run(config)


def assert_parity(vllm: list, local: list, what: str) -> None:
    """The same prompt tokens (template), at least PARITY_FLOOR identical texts, and the same ends where identical."""
    assert all(g.finish_reason in ("stop", "length") for g in vllm), [g.error for g in vllm]
    # The same chat template, so the same prompt tokens; the same stop tokens, so the same finish reasons.
    assert [g.prompt_tokens for g in vllm] == [g.prompt_tokens for g in local]
    same = [v.text == h.text for v, h in zip(vllm, local)]
    print(f"\nvLLM vs LocalBackend, {what}, greedy, float32: {sum(same)} of {len(same)} answers identical")
    assert sum(same) / len(same) >= PARITY_FLOOR, [(v.text, h.text) for v, h, s in zip(vllm, local, same) if not s]
    for v, h, s in zip(vllm, local, same):
        if s:
            assert (v.finish_reason, v.completion_tokens) == (h.finish_reason, h.completion_tokens)


def test_greedy_answers_match_local_backend(served: VllmBackend, local_base: list) -> None:
    assert_parity(served.generate(CHATS, GREEDY), local_base, "base model")


def test_sampling_works_without_per_request_seeds(served: VllmBackend) -> None:
    out = served.generate(CHATS[:3], GenerationParams(max_new_tokens=24, temperature=0.8, top_p=0.9, seed=5))
    assert all(g.finish_reason in ("stop", "length") and g.text for g in out), [g.error for g in out]
    assert served.server is not None and served.server.running  # a per-request seed would have stopped the engine


def test_the_tuned_model_merged_matches_local_backend_with_its_adapter_and_ctrl_c_stops_it(
    tuned: tuple[Path, Path], local_base: list, tmp_path: Path
) -> None:
    adapter, export = tuned
    # vLLM serves the merged export (the default on CPU); LocalBackend merges the adapter into the base itself.
    backend = VllmBackend(ModelConfig(base=str(export)), LIGHT, log_path=tmp_path / "vllm.log")
    with pytest.raises(KeyboardInterrupt), backend:
        vllm = backend.generate(CHATS, GREEDY)
        group = backend.server.process.pid
        assert group_alive(group)
        raise KeyboardInterrupt  # Ctrl-C while the server runs: one server start serves both checks
    assert not group_alive(group)
    assert "Application startup complete" in (tmp_path / "vllm.log").read_text()
    local = LocalBackend.load(ModelConfig(), adapter=adapter, batch_size=8).generate(CHATS, GREEDY)
    assert any(t.text != b.text for t, b in zip(local, local_base)), "the adapter changed no answer"
    assert_parity(vllm, local, "tuned model (merged export vs base + adapter)")


def test_a_model_vllm_cannot_load_is_an_error_naming_the_log(vllm_ready: None, tmp_path: Path) -> None:
    from adhere.models.embedded import ensure_embedded_model

    broken = tmp_path / "broken"
    broken.mkdir()
    for file in ensure_embedded_model().iterdir():  # the tokenizer and config are fine; the weights are not
        if file.suffix != ".safetensors":
            (broken / file.name).write_bytes(file.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    backend = VllmBackend(ModelConfig(base=str(broken)), LIGHT, log_path=tmp_path / "logs" / "broken.log")
    with pytest.raises(UserError) as caught, backend:
        backend.generate(CHATS[:1], GREEDY)
    message = str(caught.value)
    assert "before it was ready" in message and f"Its output is in {tmp_path / 'logs' / 'broken.log'}" in message
    assert "Error" in message.split("its last lines:")[1]  # the server's own reason, quoted from its log


def test_the_gateway_answers_as_local_backend_with_the_official_client(gateway: object, local_base: list) -> None:
    """serve.engine vllm: the same answers as LocalBackend (greedy, float32), whole and streamed token by token."""
    import openai

    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0)
    whole = [client.chat.completions.create(model="gw", messages=chat, max_tokens=96) for chat in CHATS]
    same = [w.choices[0].message.content == h.text for w, h in zip(whole, local_base)]
    print(f"\ngateway (vLLM) vs LocalBackend, base model, greedy, float32: {sum(same)} of {len(same)} identical")
    assert sum(same) / len(same) >= PARITY_FLOOR
    assert [w.usage.prompt_tokens for w in whole] == [h.prompt_tokens for h in local_base]  # the same rendered prompt
    stream = client.chat.completions.create(model="gw", messages=CHATS[2], max_tokens=96, stream=True,
                                            stream_options={"include_usage": True})
    events = list(stream)
    deltas = [e.choices[0].delta.content for e in events if e.choices and e.choices[0].delta.content]
    assert len(deltas) > 5  # passed through as vLLM sends them, not as one block at the end
    assert "".join(deltas) == whole[2].choices[0].message.content
    assert events[-1].usage.completion_tokens == whole[2].usage.completion_tokens
    assert [e.choices[0].finish_reason for e in events if e.choices][-1] == whole[2].choices[0].finish_reason


def test_the_gateway_keeps_auth_limits_errors_and_the_monitor(gateway: object) -> None:
    import sqlite3

    import openai

    url = gateway.url + "/v1"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
    assert client.models.list().data[0].model_extra["engine"] == "vllm"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=CHATS[0])
    with pytest.raises(openai.BadRequestError) as long:  # over vllm.max_model_len=2048, refused before vLLM
        client.chat.completions.create(model="gw", messages=[{"role": "user", "content": "word " * 3000}])
    assert long.value.code == "context_length_exceeded"
    cut = client.chat.completions.create(model="gw", messages=CHATS[2], max_tokens=5)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 5
    stopped = client.chat.completions.create(model="gw", messages=CHATS[0], stop=["Paris"], max_tokens=40)
    assert "Paris" not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"
    database = gateway.state.config.stage_dir("serve") / "monitor.db"
    rows = sqlite3.connect(database).execute("SELECT status, finish_reason, completion_tokens FROM requests").fetchall()
    assert (404, None, 0) in rows and (400, None, 0) in rows and (200, "length", 5) in rows


def test_stopping_the_gateway_stops_its_vllm_server(gateway: object) -> None:
    group = gateway.engine.backend.server.process.pid
    assert group_alive(group)
    gateway.stop()  # what Ctrl-C and SIGTERM do to `adhere serve`
    assert not group_alive(group)
    assert not gateway.engine.ready
