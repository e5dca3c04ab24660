"""The generation backends: local HF model (batched = one at a time), OpenAI-compatible HTTP, the disk cache.

    .venv/bin/python -m pytest tests/test_generation.py -q     # a few seconds, no network (a stub server on loopback)

The local model is tests/tiny.py's 2-layer Llama with its weights redrawn at std 0.3, so greedy
answers are varied text rather than one repeated token and the batching tests can fail.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import build_family_tokenizer, build_tiny_model, build_tiny_tokenizer

from adhere.errors import UserError
from adhere.generation import (
    CachedBackend,
    EndpointConfig,
    Generation,
    GenerationParams,
    HttpBackend,
    LocalBackend,
    check_chats,
)
from adhere.generation.local import files_fingerprint, stop_token_ids

# Prompt lengths from 17 to 49 tokens, so every batch of them is left-padded.
CHATS = [[{"role": "user", "content": "Review this code " * k}] for k in (1, 5, 2, 8, 3, 7, 4, 6)]
CHATS[3] = [{"role": "system", "content": "You are terse."}, *CHATS[3]]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """One torch thread: on 2 shared cores, two threads spin-wait on each other (20x slower on this tiny model)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def varied_model(tokenizer: Any, std: float = 0.3) -> Any:
    model = build_tiny_model(len(tokenizer), seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:  # embeddings and linear layers; norms stay at 1
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model.eval()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gen") / "base"
    tokenizer = build_tiny_tokenizer()
    varied_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def backend(base_dir: Path) -> LocalBackend:
    return LocalBackend.load(base_dir, batch_size=8, device="cpu")


# ---------------------------------------------------------------- local backend


def test_batched_greedy_equals_one_at_a_time_token_for_token(backend: LocalBackend) -> None:
    params = GenerationParams(max_new_tokens=24)
    prompts = [backend.encode(chat) for chat in CHATS]
    assert len({len(p) for p in prompts}) == len(prompts)  # all lengths differ: padding in every batch
    batched = backend.generate_ids(prompts, params)
    single = [backend.generate_ids([p], params)[0] for p in prompts]
    assert backend.model.dtype == torch.float32 and not backend.bf16_autocast
    assert batched == single
    assert len({tuple(row) for row in batched}) == len(prompts)  # eight different answers, not one repeated
    assert [g.text for g in backend.generate(CHATS, params)] == [backend.generate([c], params)[0].text for c in CHATS]


def test_results_in_input_order_from_length_sorted_batches(backend: LocalBackend, monkeypatch: Any) -> None:
    params = GenerationParams(max_new_tokens=6)
    expected = [backend.generate([chat], params)[0].text for chat in CHATS]
    widths: list[list[int]] = []
    real = backend.generate_ids
    monkeypatch.setattr(backend, "generate_ids", lambda ps, p: widths.append([len(x) for x in ps]) or real(ps, p))
    monkeypatch.setattr(backend, "batch_size", 3)
    seen: list[int] = []
    results = backend.generate(CHATS, params, progress=lambda i, g: seen.append(i))
    assert [g.text for g in results] == expected
    lengths = sorted((len(backend.encode(c)) for c in CHATS), reverse=True)
    assert widths == [lengths[0:3], lengths[3:6], lengths[6:8]]  # longest first, three at a time
    assert sorted(seen) == list(range(len(CHATS)))
    assert [g.prompt_tokens for g in results] == [len(backend.encode(c)) for c in CHATS]


def test_finish_reason_length_then_stop_at_end_of_turn(base_dir: Path) -> None:
    probe = LocalBackend.load(base_dir)
    prompt = probe.encode(CHATS[0])
    ids = probe.generate_ids([prompt], GenerationParams(max_new_tokens=12))[0]
    # Without a stop token in 5 tokens the answer is cut: 'length', all 5 counted.
    cut = probe.generate([CHATS[0]], GenerationParams(max_new_tokens=5))[0]
    assert (cut.finish_reason, cut.completion_tokens, cut.prompt_tokens) == ("length", 5, len(prompt))
    assert cut.text == probe.tokenizer.decode(ids[:5])
    # Make the 4th greedy token the end of turn (eos): the answer stops before it, which counts as generated.
    k = next(k for k in range(3, 12) if ids[k] not in ids[:k] and probe.tokenizer.decode(ids[:k]))
    tokenizer = build_tiny_tokenizer()
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(ids[k])
    stopping = LocalBackend(probe.model, tokenizer, name="tiny", weights_id="w")
    assert stopping.stop_ids == {ids[k], 2}  # the new eos and ChatML's <|im_end|>
    done = stopping.generate([CHATS[0]], GenerationParams(max_new_tokens=12))[0]
    assert (done.finish_reason, done.completion_tokens) == ("stop", k + 1)
    assert done.text == tokenizer.decode(ids[:k])


def test_a_model_that_answers_nothing_gives_empty_stop(base_dir: Path) -> None:
    probe = LocalBackend.load(base_dir)
    first = probe.generate_ids([probe.encode(CHATS[2])], GenerationParams(max_new_tokens=1))[0][0]
    tokenizer = build_tiny_tokenizer()
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(first)
    silent = LocalBackend(probe.model, tokenizer, name="tiny", weights_id="w")
    result = silent.generate([CHATS[2]], GenerationParams(max_new_tokens=8))[0]
    assert (result.text, result.finish_reason, result.completion_tokens, result.error) == ("", "stop", 1, None)


def test_end_of_turn_token_comes_from_the_chat_template() -> None:
    class NoEos:
        generation_config = type("Config", (), {"eos_token_id": None})()

    for family, expected in {"chatml": ["<|im_end|>"], "llama3": ["<|eot_id|>"],
                             "gemma": ["<eos>", "<end_of_turn>"]}.items():
        tokenizer = build_family_tokenizer(family)
        assert stop_token_ids(tokenizer, NoEos()) == set(tokenizer.convert_tokens_to_ids(expected)), family


def test_sampling_is_reproducible_for_a_seed_in_any_batch(backend: LocalBackend) -> None:
    params = GenerationParams(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    batched = [g.text for g in backend.generate(CHATS, params)]
    assert batched == [backend.generate([chat], params)[0].text for chat in CHATS]
    assert batched[::-1] == [g.text for g in backend.generate(CHATS[::-1], params)]
    greedy = [g.text for g in backend.generate(CHATS, GenerationParams(max_new_tokens=12))]
    other_seed = [g.text for g in backend.generate(CHATS, GenerationParams(12, 1.0, 0.9, seed=8))]
    assert sum(a != b for a, b in zip(batched, greedy)) >= 6 and sum(a != b for a, b in zip(batched, other_seed)) >= 6


def test_answering_each_prompt_several_times_reads_it_once_and_answers_as_repeated_rows(backend: LocalBackend) -> None:
    """`repeats` (GRPO's group of answers to one prompt): the prompts' KV cache, computed once and copied to each
    row, gives the tokens that the prompts repeated row by row give, greedy and sampled with a seed per row."""
    prompts = [backend.encode(chat) for chat in CHATS[:3]]  # of different lengths: left padding is exercised
    assert len({len(p) for p in prompts}) == 3
    for params in (GenerationParams(max_new_tokens=10), GenerationParams(10, temperature=1.0, seed=3)):
        seeds = list(range(100, 112))
        repeated = backend.generate_ids([p for p in prompts for _ in range(4)], params, seeds=seeds)
        assert backend.generate_ids(prompts, params, seeds=seeds, repeats=4) == repeated
    assert len({tuple(row) for row in repeated}) > 3  # a seed per row: the answers to one prompt differ


def test_top_p_0_keeps_the_most_likely_token() -> None:
    from adhere.generation.sampling import seeded_sampler

    # Issue 14, defect 12: top_p 0 zeroed every token and torch.multinomial refused the row.
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    sampler = seeded_sampler([[1], [2, 3], [4]], GenerationParams(8, temperature=5.0, top_p=0.0), "cpu")
    out = sampler(None, scores)
    assert torch.equal(out.argmax(dim=-1), scores.argmax(dim=-1))
    assert torch.equal(torch.isfinite(out).sum(dim=-1), torch.ones(3, dtype=torch.long))  # one choice per row


def test_top_p_0_samples_the_greedy_answer(backend: LocalBackend) -> None:
    greedy = [g.text for g in backend.generate(CHATS, GenerationParams(max_new_tokens=12))]
    for seed in (0, 7):  # a high temperature would make any other kept token likely
        nucleus = backend.generate(CHATS, GenerationParams(12, temperature=5.0, top_p=0.0, seed=seed))
        assert [g.text for g in nucleus] == greedy and {g.finish_reason for g in nucleus} <= {"stop", "length"}


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft 0.21, upstream
def test_adapter_is_merged_and_its_tokenizer_used(base_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    peft = get_peft_model(varied_model(tokenizer), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                              init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft.save_pretrained(adapter)
    trained_template = "{{ '<|im_start|>system\nTrained.<|im_end|>\n' }}" + tokenizer.chat_template
    tokenizer.chat_template = trained_template
    tokenizer.save_pretrained(adapter)  # as `adhere train` does: the template used in training
    tuned = LocalBackend.load(base_dir, adapter=adapter)
    base = LocalBackend.load(base_dir)

    prompt = tuned.encode(CHATS[1])
    assert prompt == tokenizer.apply_chat_template(CHATS[1], add_generation_prompt=True, return_dict=True)["input_ids"]
    assert prompt != base.encode(CHATS[1])
    params = GenerationParams(max_new_tokens=10)
    with torch.no_grad():  # PEFT's own unmerged forward, greedy
        ids = torch.tensor([prompt])
        want = peft.eval().generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10,
                                    do_sample=False, eos_token_id=2, pad_token_id=0)[0, len(prompt):].tolist()
    assert tuned.generate_ids([prompt], params)[0] == want
    assert base.generate_ids([prompt], params)[0] != want
    assert "adapter:" in tuned.name and tuned.identity != base.identity
    with pytest.raises(UserError, match="no adapter_config.json"):
        LocalBackend.load(base_dir, adapter=base_dir)


def test_identity_changes_with_the_weight_files(base_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in base_dir.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    before = files_fingerprint([copy])
    assert files_fingerprint([copy]) == before
    weights = copy / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    assert files_fingerprint([copy]) != before
    tokenizer = build_tiny_tokenizer()
    model = varied_model(tokenizer)
    exact = LocalBackend(model, tokenizer, name="tiny", weights_id="w")
    autocast = LocalBackend(model, tokenizer, name="tiny", weights_id="w", precision="bfloat16")
    assert not exact.bf16_autocast and autocast.bf16_autocast  # 'auto' keeps float32 on CPU
    assert exact.identity != autocast.identity != LocalBackend(model, tokenizer, name="tiny", weights_id="v").identity


def test_long_prompt_is_an_error_result_and_oom_splits_the_batch(backend: LocalBackend, monkeypatch: Any) -> None:
    params = GenerationParams(max_new_tokens=4)
    chats = [*CHATS[:3], [{"role": "user", "content": "Review this code " * 80}]]  # 323 tokens > 256 positions
    results = backend.generate(chats, params)
    assert results[3].finish_reason == "error" and "reads at most 256" in results[3].error
    expected = [g.text for g in results[:3]]
    sizes: list[int] = []
    real = backend.generate_ids

    def small_memory(prompts: list[list[int]], p: GenerationParams) -> list[list[int]]:
        sizes.append(len(prompts))
        if len(prompts) > 1:
            raise torch.OutOfMemoryError("simulated")
        return real(prompts, p)

    monkeypatch.setattr(backend, "generate_ids", small_memory)
    assert [g.text for g in backend.generate(chats[:3], params)] == expected
    assert sizes == [3, 1, 2, 1, 1]


def test_params_and_chats_are_checked() -> None:
    for bad in ({"max_new_tokens": 0}, {"temperature": -1}, {"top_p": -0.1}, {"top_p": 1.5}):
        with pytest.raises(UserError, match=next(iter(bad))):
            GenerationParams(**bad)
    with pytest.raises(UserError, match=r"chats\[1\]: ends with a 'assistant' message"):
        check_chats([CHATS[0], [*CHATS[0], {"role": "assistant", "content": "x"}]])
    with pytest.raises(UserError, match=r"chats\[0\]\[0\]"):
        check_chats([[{"role": "user"}]])


# ---------------------------------------------------------------- cache


class Counting:
    """A fake backend that answers 'echo: <last message>' and records what it was asked."""

    def __init__(self, identity: str = "fake") -> None:
        self.name = self.identity = identity
        self.asked: list[str] = []

    def generate(self, chats: list[list[dict[str, Any]]], params: GenerationParams, progress: Any = None) -> list:
        out = []
        for i, chat in enumerate(chats):
            text = chat[-1]["content"]
            self.asked.append(text)
            result = Generation(f"echo: {text}", "stop", len(text), 2) if "fail" not in text else \
                Generation("", "error", 0, 0, error="boom")
            if text == "crash":
                raise RuntimeError("the process dies here")
            out.append(result)
            if progress:
                progress(i, result)
        return out


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_cache_hits_on_the_second_call_and_misses_on_new_params_or_identity(tmp_path: Path) -> None:
    inner = Counting()
    cached = CachedBackend(inner, tmp_path / "cache.sqlite")
    params = GenerationParams(max_new_tokens=16)
    first = cached.generate([chat("a"), chat("b"), chat("a")], params)
    assert inner.asked == ["a", "b"]  # the duplicate is generated once
    assert [g.text for g in first] == ["echo: a", "echo: b", "echo: a"] and not any(g.cached for g in first)
    again = cached.generate([chat("b"), chat("a")], params)
    assert inner.asked == ["a", "b"] and [g.text for g in again] == ["echo: b", "echo: a"]
    assert all(g.cached for g in again) and (cached.hits, cached.misses) == (2, 2)
    cached.generate([chat("a")], GenerationParams(max_new_tokens=16, seed=1))
    assert inner.asked == ["a", "b", "a"]
    other = Counting("another model")
    CachedBackend(other, tmp_path / "cache.sqlite").generate([chat("a")], params)
    assert other.asked == ["a"]
    reopened = Counting()
    assert CachedBackend(reopened, tmp_path / "cache.sqlite").generate([chat("b")], params)[0].text == "echo: b"
    assert reopened.asked == []


def test_cache_keeps_answers_committed_before_a_crash_and_never_errors(tmp_path: Path) -> None:
    inner = Counting()
    cached = CachedBackend(inner, tmp_path / "cache.sqlite")
    params = GenerationParams()
    with pytest.raises(RuntimeError):
        cached.generate([chat("a"), chat("fail"), chat("crash"), chat("b")], params)
    inner.asked.clear()
    results = cached.generate([chat("a"), chat("fail"), chat("b")], params)
    assert inner.asked == ["fail", "b"]  # "a" survived the crash; the error was not stored
    assert [g.finish_reason for g in results] == ["stop", "error", "stop"]
    (tmp_path / "junk.sqlite").write_text("not a database, just text " * 100)
    with pytest.raises(UserError, match="junk.sqlite"):
        CachedBackend(inner, tmp_path / "junk.sqlite")


# ---------------------------------------------------------------- HTTP backend against a stub server


class Stub(BaseHTTPRequestHandler):
    """Answers by the last user message: 'ok', 'flaky' (500 once), 'down' (500), 'slow', 'auth' (401),
    'busy' (429 with Retry-After 0.3 once), 'wait' (0.1 s, counts requests in flight), 'junk' (not JSON)."""

    def do_POST(self) -> None:
        server: Any = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        with server.lock:
            server.requests.append((text, body, self.headers.get("Authorization")))
            seen = sum(1 for r in server.requests if r[0] == text)
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            self.answer(text, seen)
        finally:
            with server.lock:
                server.in_flight -= 1

    def answer(self, text: str, seen: int) -> None:
        if text == "down" or (text == "flaky" and seen == 1):
            return self.send(500, b'{"error": {"message": "CUDA out of memory on the server"}}')
        if text == "auth":
            return self.send(401, b'{"error": {"message": "Incorrect API key provided"}}')
        if text == "busy" and seen == 1:
            return self.send(429, b"slow down", {"Retry-After": "0.3"})
        if text == "slow":
            time.sleep(1.0)
        if text == "wait":
            time.sleep(0.1)
        if text == "junk":
            return self.send(200, b"<html>gateway</html>")
        reply = {"choices": [{"message": {"role": "assistant", "content": f"re: {text}"}, "finish_reason": "length"}],
                 "usage": {"prompt_tokens": 11, "completion_tokens": 7}}
        self.send(200, json.dumps(reply).encode())

    def send(self, code: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        try:
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up first
            pass

    def log_message(self, *args: Any) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def stub() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.daemon_threads = True
    server.lock, server.requests, server.in_flight, server.max_in_flight = threading.Lock(), [], 0, 0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def endpoint(server: Any, **overrides: Any) -> EndpointConfig:
    settings = {"base_url": f"http://127.0.0.1:{server.server_address[1]}/v1/", "model": "stub-model",
                "backoff_s": 0.01, "timeout_s": 5.0, **overrides}
    return EndpointConfig(**settings)


def test_http_success_sends_the_params_and_reads_finish_reason_and_usage(stub: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("STUB_KEY", "sk-test-123")
    backend = HttpBackend(endpoint(stub, api_key_env="STUB_KEY"))
    params = GenerationParams(max_new_tokens=33, temperature=0.5, top_p=0.8, seed=4)
    [result] = backend.generate([[{"role": "system", "content": "Be brief."}, *chat("ok")]], params)
    assert (result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens) == ("re: ok", "length", 11, 7)
    [(_, body, auth)] = stub.requests
    assert auth == "Bearer sk-test-123"
    assert body == {"model": "stub-model", "messages": [{"role": "system", "content": "Be brief."}, *chat("ok")],
                    "max_tokens": 33, "temperature": 0.5, "top_p": 0.8, "seed": 4}
    assert backend.name == f"http://127.0.0.1:{stub.server_address[1]}/v1 model=stub-model"
    # top_p 0 (the most likely token only) goes out as greedy: OpenAI-style servers refuse top_p 0.
    backend.generate([chat("ok")], GenerationParams(max_new_tokens=5, temperature=0.7, top_p=0.0, seed=1))
    assert (stub.requests[-1][1]["temperature"], stub.requests[-1][1]["top_p"]) == (0.0, 1.0)
    monkeypatch.delenv("STUB_KEY")
    with pytest.raises(UserError, match="STUB_KEY is not set"):
        HttpBackend(endpoint(stub, api_key_env="STUB_KEY"))


def test_http_retries_a_500_and_a_429_but_keeps_every_other_result(stub: Any) -> None:
    backend = HttpBackend(endpoint(stub, max_tries=3))
    started = time.perf_counter()
    results = backend.generate([chat("flaky"), chat("down"), chat("ok"), chat("busy")], GenerationParams())
    assert [g.finish_reason for g in results] == ["length", "error", "length", "length"]
    assert [g.text for g in results] == ["re: flaky", "", "re: ok", "re: busy"]
    assert results[1].error.startswith(f"HTTP 500 from {backend.url}, 3 tries: ")
    assert "CUDA out of memory on the server" in results[1].error
    asked = [r[0] for r in stub.requests]
    assert (asked.count("flaky"), asked.count("down"), asked.count("ok"), asked.count("busy")) == (2, 3, 1, 2)
    assert time.perf_counter() - started >= 0.3  # the 429's Retry-After, not the 0.01 s backoff


def test_http_401_is_not_retried_and_says_why(stub: Any) -> None:
    [result] = HttpBackend(endpoint(stub)).generate([chat("auth")], GenerationParams())
    assert result.finish_reason == "error" and [r[0] for r in stub.requests] == ["auth"]
    assert "HTTP 401" in result.error and "not retried" in result.error and "api_key_env" in result.error
    assert "Incorrect API key provided" in result.error


def test_http_timeout_junk_and_refused_connection_are_error_results(stub: Any) -> None:
    started = time.perf_counter()
    slow, junk = HttpBackend(endpoint(stub, timeout_s=0.2, max_tries=2)).generate([chat("slow"), chat("junk")],
                                                                                  GenerationParams())
    assert slow.error == "timed out after 0.2 s, 2 tries" and time.perf_counter() - started < 1.5
    assert junk.finish_reason == "error" and "not with a chat completion: <html>gateway</html>" in junk.error
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    [refused] = HttpBackend(EndpointConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", backoff_s=0.01,
                                           max_tries=2)).generate([chat("ok")], GenerationParams())
    assert refused.error.startswith(f"cannot connect to http://127.0.0.1:{port}/v1/chat/completions, 2 tries: ")


def test_http_concurrency_is_honoured(stub: Any) -> None:
    started = time.perf_counter()
    results = HttpBackend(endpoint(stub, concurrency=3)).generate([chat("wait")] * 9, GenerationParams())
    assert all(g.text == "re: wait" for g in results)
    assert stub.max_in_flight == 3 and time.perf_counter() - started >= 0.3  # 9 requests of 0.1 s, 3 at a time
    with pytest.raises(Exception, match="http"):
        EndpointConfig(base_url="localhost:8000", model="m")
