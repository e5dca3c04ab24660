"""Step 6: the OpenAI-compatible server on a tiny model, through the real `openai` client on loopback.

Answers equal LocalBackend's, streamed or not; keys are required and compared in constant time;
limits give OpenAI-shaped 400/404/405/413/422 errors; every request is in monitor.db; /metrics and
the dashboard data count what was sent; feedback exports as records `adhere data` accepts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_serve_support import (  # noqa: F401  (long_tiny_dir is a fixture)
    API_KEY,
    SPEC_YAML,
    auth,
    chat,
    client,
    db_rows,
    long_tiny_dir_fixture,
    one_torch_thread_fixture,
    start_server,
)

SYSTEM = "You are terse."
SERVE_YAML = "  max_tokens: 3000\n  max_body_bytes: 20000\n  max_messages: 4\n  max_message_chars: 2000\n"
QUESTIONS = ["Review this Python code.", "What is the capital of France?", "def add(a, b):", "Say hi."]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, long_tiny_dir: Path) -> Any:
    folder = tmp_path_factory.mktemp("serve")
    spec = SPEC_YAML.rstrip("\n").replace("spec:", f"spec:\n  system_prompt: {SYSTEM}") + "\n"
    server = start_server(folder, long_tiny_dir, SERVE_YAML, spec_yaml=spec)
    yield folder, server
    server.stop()


@pytest.fixture(scope="module")
def reference(long_tiny_dir: Path) -> Any:
    """The same model through LocalBackend: what evaluation would have measured."""
    from adhere.generation import LocalBackend

    return LocalBackend.load(long_tiny_dir)


def framed(text: str) -> list[dict[str, str]]:
    """A chat as the server renders it: the spec's system prompt first."""
    return [{"role": "system", "content": SYSTEM}, *chat(text)]


def test_whole_and_streamed_answers_equal_the_backends(served: Any, reference: Any) -> None:
    from adhere.generation import GenerationParams

    _, server = served
    expected = reference.generate([framed(QUESTIONS[0])], GenerationParams(max_new_tokens=24, temperature=1.0, seed=7))[0]
    openai = client(server)
    whole = openai.chat.completions.create(model="p", messages=chat(QUESTIONS[0]), max_tokens=24, temperature=1.0, seed=7)
    assert whole.id.startswith("chatcmpl-") and whole.model == "p" and whole.object == "chat.completion"
    assert whole.choices[0].message.content == expected.text and whole.choices[0].finish_reason == "length"
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (expected.prompt_tokens, 24)
    assert whole.usage.total_tokens == expected.prompt_tokens + 24

    chunks = list(openai.chat.completions.create(model="p", messages=chat(QUESTIONS[0]), max_completion_tokens=24,
                                                 temperature=1.0, seed=7, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24
    assert len({c.id for c in chunks}) == 1 and chunks[0].id != whole.id


def test_greedy_answers_system_prompts_and_stop_sequences(served: Any, reference: Any) -> None:
    from adhere.generation import GenerationParams

    _, server = served
    openai = client(server)
    greedy = reference.generate([framed(QUESTIONS[1])], GenerationParams(max_new_tokens=6))[0]
    answer = openai.chat.completions.create(model="p", messages=chat(QUESTIONS[1]), max_tokens=6)
    assert answer.choices[0].message.content == greedy.text == "\n" * 6  # the tiny model repeats the prompt's last token
    assert answer.usage.prompt_tokens == len(reference.encode(framed(QUESTIONS[1])))
    own = [{"role": "system", "content": "Be brief."}, *chat(QUESTIONS[1])]  # a request's own system prompt stays
    answer = openai.chat.completions.create(model="p", messages=own, max_tokens=2)
    assert answer.usage.prompt_tokens == len(reference.encode(own))

    sampled = reference.generate([framed(QUESTIONS[2])], GenerationParams(max_new_tokens=40, temperature=1.0, seed=3))[0]
    text = sampled.text
    start = next(i for i in range(4, len(text) - 3) if text[i:i + 3].isascii() and text[i:i + 3].isprintable())
    stop = text[start:start + 3]
    cut = text[:text.find(stop)]
    whole = openai.chat.completions.create(model="p", messages=chat(QUESTIONS[2]), max_tokens=40, temperature=1.0,
                                           seed=3, stop=[stop, "never-seen"])
    assert whole.choices[0].message.content == cut and whole.choices[0].finish_reason == "stop"
    streamed = list(openai.chat.completions.create(model="p", messages=chat(QUESTIONS[2]), max_tokens=40,
                                                   temperature=1.0, seed=3, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == cut
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_every_endpoint_but_health_and_ready_needs_a_key(served: Any) -> None:
    import openai as openai_module

    _, server = served
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/ready").json() == {"status": "ready", "model": "p"}
    for method, path in (("GET", "/v1/models"), ("GET", "/v1/models/p"), ("POST", "/v1/chat/completions"),
                         ("GET", "/metrics"), ("POST", "/v1/feedback"), ("GET", "/dashboard/data"),
                         ("GET", "/openapi.json")):
        for headers in ({}, auth("wrong-key"), {"Authorization": API_KEY}):  # none, wrong, not a Bearer header
            response = httpx.request(method, f"{server.url}{path}", headers=headers, json={})
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "invalid_api_key"
    models = httpx.get(f"{server.url}/v1/models", headers=auth()).json()
    assert [m["id"] for m in models["data"]] == ["p"] and models["data"][0]["run_id"].startswith("base-")
    with pytest.raises(openai_module.AuthenticationError):
        client(server, key="wrong-key").models.list()
    assert [m.id for m in client(server).models.list()] == ["p"]


def test_keys_are_compared_in_constant_time_against_every_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from adhere.serve.auth import Keys, key_digest

    keys = Keys([key_digest(k) for k in ("a", "b", "c")])
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda x, y: calls.append(1) or real(x, y))
    for key, expected in (("a", key_digest("a")), ("c", key_digest("c")), ("zz", None)):
        calls.clear()
        assert keys.check_key(key) == expected
        assert len(calls) == 3  # all digests, whether the first, the last or none matches
    token = keys.session_for(key_digest("b"), now=1000.0)
    assert keys.check_session(token, now=1000.0 + keys.session_s - 1)
    assert not keys.check_session(token, now=1000.0 + keys.session_s + 1)  # expired
    assert not keys.check_session(token[:-1] + ("0" if token[-1] != "0" else "1"), now=1000.0)  # tampered
    assert not Keys([key_digest("b")]).check_session(token, now=1000.0)  # another server's secret


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and "Traceback" not in error["message"]
    return error


def test_limits_and_invalid_requests_get_openai_errors(served: Any) -> None:
    folder, server = served
    url, ok = f"{server.url}/v1/chat/completions", {"model": "p", "messages": chat("Hi")}
    post = lambda body, **kw: httpx.post(url, headers=auth(), json=body, **kw)
    assert error_of(post({**ok, "messages": chat("x" * 30000)}), 413)["code"] == "request_too_large"
    assert error_of(post({**ok, "messages": chat("Hi") * 5}), 400)["param"] == "messages"
    assert "serve.max_message_chars" in error_of(post({**ok, "messages": chat("x" * 2500)}), 400)["message"]
    assert error_of(post({**ok, "max_tokens": 3001}), 400)["param"] == "max_tokens"
    assert error_of(post({**ok, "max_completion_tokens": 3001}), 400)["param"] == "max_completion_tokens"
    assert error_of(post({**ok, "n": 2}), 400)["param"] == "n"
    assert error_of(post({**ok, "stop": ["a", "b", "c", "d", "e"]}), 400)["param"] == "stop"
    assert error_of(post({**ok, "messages": [*chat("Hi"), {"role": "assistant", "content": "Hello"}]}), 400)
    assert error_of(post({**ok, "temperature": "hot"}), 422)["param"] == "temperature"
    assert error_of(post({"model": "p"}), 422)["param"] == "messages"
    assert error_of(post({**ok, "messages": [{"role": "bot", "content": "Hi"}]}), 422)["param"] == "messages.0.role"
    bad_json = httpx.post(url, headers={**auth(), "Content-Type": "application/json"}, content=b'{"model": ')
    assert error_of(bad_json, 400)["message"] == "request body is not valid JSON"
    assert error_of(post({**ok, "model": "gpt-4"}), 404)["code"] == "model_not_found"
    assert error_of(httpx.get(f"{server.url}/v1/nothing", headers=auth()), 404)
    assert error_of(httpx.get(url, headers=auth()), 405)
    answered, refused, invalid = post({**ok, "max_tokens": 2}), post({**ok, "n": 2}), post({**ok, "top_p": 0})
    assert answered.status_code == 200
    # Every request that got past authentication is in monitor.db (the 413 did not: it is refused before).
    statuses = {r["id"]: r["status"] for r in db_rows(folder, "SELECT id, status FROM requests")}
    assert statuses[answered.json()["id"]] == 200 and statuses[refused.headers["x-request-id"]] == 400
    assert statuses[invalid.headers["x-request-id"]] == 422 and statuses[bad_json.headers["x-request-id"]] == 400
    assert set(statuses.values()) >= {200, 400, 404, 422}


def test_each_request_is_recorded_with_its_answer_checks_and_timing(served: Any) -> None:
    folder, server = served
    response = httpx.post(f"{server.url}/v1/chat/completions", headers=auth(),
                          json={"model": "p", "messages": chat("Say hi."), "max_tokens": 5,
                                "response_format": {"type": "json_object"}})  # accepted; the spec's checks judge it
    body = response.json()
    [row] = db_rows(folder, "SELECT * FROM requests WHERE id = ?", (body["id"],))
    assert row["status"] == 200 and row["model"] == "p" and row["run_id"].startswith("base-") and not row["stream"]
    assert json.loads(row["messages"]) == chat("Say hi.")  # as the client sent them (no system prompt added)
    assert row["response"] == body["choices"][0]["message"]["content"] == "\n" * 5
    assert row["response_sha256"] == hashlib.sha256(row["response"].encode()).hexdigest()
    assert (row["prompt_tokens"], row["completion_tokens"], row["finish_reason"]) == (
        body["usage"]["prompt_tokens"], 5, "length")
    assert 0 <= row["queue_s"] <= row["first_token_s"] <= row["latency_s"]
    assert 0 < row["generate_s"] <= row["latency_s"] - row["queue_s"]
    assert json.loads(row["checks"]) == [["max_words(n=5)", True], ["min_words(n=1)", False]]  # 0 words
    assert json.loads(row["params"]) == {"model": "p", "max_tokens": 5, "stream": False,
                                         "response_format": {"type": "json_object"}}
    checks = db_rows(folder, "SELECT label, passed FROM checks WHERE request_id = ?", (body["id"],))
    assert [(c["label"], c["passed"]) for c in checks] == [("max_words(n=5)", 1), ("min_words(n=1)", 0)]


def test_metrics_and_dashboard_data_count_what_was_sent(tmp_path: Path, long_tiny_dir: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with start_server(tmp_path, long_tiny_dir) as server:
        openai = client(server)
        for question in QUESTIONS[:3]:
            openai.chat.completions.create(model="p", messages=chat(question), max_tokens=4)
        list(openai.chat.completions.create(model="p", messages=chat("Hi"), max_tokens=4, stream=True))
        httpx.post(f"{server.url}/v1/chat/completions", json={"model": "p", "messages": chat("Hi")})  # 401
        httpx.post(f"{server.url}/v1/chat/completions", headers=auth(), json={"model": "p", "messages": chat("Hi"), "n": 3})
        text = httpx.get(f"{server.url}/metrics", headers=auth()).text
        data = httpx.get(f"{server.url}/dashboard/data", headers=auth()).json()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    chat_path = "/v1/chat/completions"
    assert value("adhere_http_requests_total", endpoint=chat_path, status="200") == 4
    assert value("adhere_http_requests_total", endpoint=chat_path, status="401") == 1
    assert value("adhere_http_requests_total", endpoint=chat_path, status="400") == 1
    assert value("adhere_request_latency_seconds_count", stream="false") == 3
    assert value("adhere_request_latency_seconds_count", stream="true") == 1
    assert value("adhere_tokens_total", kind="completion") == 16
    assert value("adhere_completions_total", finish_reason="length") == 4
    assert value("adhere_compliance_checks_total", constraint="min_words(n=1)", result="fail") == 4
    assert value("adhere_compliance_pass_rate", constraint="max_words(n=5)") == 1.0
    assert value("adhere_compliance_pass_rate", constraint="min_words(n=1)") == 0.0
    assert value("adhere_queue_depth") == 0 and value("adhere_running_requests") == 0
    assert value("adhere_batch_size_sum") == 4 and value("adhere_generation_tokens_per_second_count") == 4

    totals = data["totals"]
    assert (totals["requests"], totals["errors"]) == (5, 1)  # the 401 never reached the database
    assert totals["pass_rate"] == {"max_words(n=5)": 1.0, "min_words(n=1)": 0.0}
    assert sum(data["volume"]["ok"]) == 4 and sum(data["volume"]["error"]) == 1
    assert len(data["buckets"]) == len(data["volume"]["ok"]) == len(data["latency"]["p50"])
    assert [r["status"] for r in data["latest"]] == [400, 200, 200, 200, 200]
    assert data["latest"][1]["checks"] == [["max_words(n=5)", True], ["min_words(n=1)", False]]


def test_feedback_is_stored_and_exported_as_records_adhere_data_accepts(served: Any, tmp_path: Path) -> None:
    import adhere.data
    from adhere.config import load_config
    from adhere.serve import export_feedback

    folder, server = served
    openai = client(server)
    ids, texts = [], []
    for i, question in enumerate(["Name a river.", "Name a volcano.", "Name a planet.", "Name a bridge."]):
        answer = openai.chat.completions.create(model="p", messages=chat(question), max_tokens=12, temperature=1.0,
                                                seed=i)
        ids.append(answer.id)
        texts.append(answer.choices[0].message.content)
    post = lambda body: httpx.post(f"{server.url}/v1/feedback", headers=auth(), json=body)
    acks = [post({"completion_id": ids[0], "rating": "down"}).json(),  # superseded by the next one
            post({"completion_id": ids[0], "rating": 5, "comment": "good"}).json(),
            post({"completion_id": ids[1], "rating": "down", "comment": "wrong river"}).json(),
            post({"completion_id": ids[2], "rating": 2, "correction": "Mars is a planet."}).json(),
            post({"completion_id": ids[3], "rating": 3}).json()]
    assert [a["rating"] for a in acks] == ["down", "up", "down", "down", "neutral"]
    assert [a["score"] for a in acks] == [1, 5, 1, 2, 3]
    assert error_of(post({"completion_id": "chatcmpl-nope", "rating": "up"}), 404)["code"] == "completion_not_found"
    assert error_of(post({"completion_id": ids[0], "rating": 6}), 422)
    assert error_of(post({"completion_id": ids[0], "rating": "up", "correction": "  "}), 400)["param"] == "correction"
    stored = db_rows(folder, "SELECT completion_id, rating, score, correction, comment FROM feedback ORDER BY id")
    assert [tuple(r) for r in stored][-5:] == [(ids[0], "down", 1, None, None), (ids[0], "up", 5, None, "good"),
                                              (ids[1], "down", 1, None, "wrong river"),
                                              (ids[2], "down", 2, "Mars is a planet.", None), (ids[3], "neutral", 3, None, None)]

    out = export_feedback(server.state.config, tmp_path / "new_data.jsonl")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["messages"] for r in records] == [
        [{"role": "user", "content": "Name a river.", "weight": 1}, {"role": "assistant", "content": texts[0], "weight": 1}],
        [{"role": "user", "content": "Name a planet.", "weight": 1},
         {"role": "assistant", "content": "Mars is a planet.", "weight": 1}],
    ]
    assert [(r["meta"]["kind"], r["meta"]["request_id"], r["meta"]["served_model"]) for r in records] == [
        ("approved", ids[0], "p"), ("corrected", ids[2], "p")]
    assert all(r["meta"]["run_id"] == server.state.run_id and r["meta"]["origin"] == "feedback" for r in records)
    [label] = [json.loads(line) for line in (tmp_path / "new_data.to_label.jsonl").read_text().splitlines()]
    assert label["messages"] == chat("Name a volcano.") and label["rejected_response"] == texts[1]
    assert label["meta"]["comment"] == "wrong river"
    summary = json.loads((tmp_path / "new_data.summary.json").read_text())
    assert summary["counts"] == {"approved": 1, "corrected": 1, "not_used": 1, "to_label": 1}

    # The next round: `adhere data` takes the export as a source.
    project = tmp_path / "next"
    project.mkdir()
    (project / "adhere.yaml").write_text(
        f"name: next\nmodel: {{base: {server.state.config.model.base}}}\n"
        f"data:\n  sources: [{{path: {out}}}]\n  eval_fraction: 0.5\n  quality: {{enabled: false}}\n")
    run_dir = adhere.data.run(load_config(project / "adhere.yaml"))
    kept = [json.loads(line) for name in ("train.jsonl", "eval.jsonl") for line in (run_dir / name).read_text().splitlines()]
    assert sorted(r["meta"]["request_id"] for r in kept) == sorted([ids[0], ids[2]])
    assert all(r["meta"]["format"] == "messages" and r["meta"]["origin"] == "feedback" for r in kept)


def test_dashboard_sign_in_gives_a_cookie_only_the_dashboard_accepts(served: Any) -> None:
    _, server = served
    page = httpx.get(f"{server.url}/dashboard")
    assert page.status_code == 401 and "text/html" in page.headers["content-type"] and "API key" in page.text
    assert error_of(httpx.post(f"{server.url}/dashboard/login", json={"key": "wrong"}), 401)
    login = httpx.post(f"{server.url}/dashboard/login", json={"key": API_KEY})
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and API_KEY not in cookie
    session = {"adhere_session": login.cookies["adhere_session"]}
    signed_in = httpx.get(f"{server.url}/dashboard", cookies=session)
    assert signed_in.status_code == 200 and "Latest responses" in signed_in.text and '"refresh_s": 5.0' in signed_in.text
    assert httpx.get(f"{server.url}/dashboard/data", cookies=session).json()["model"] == "p"
    assert httpx.get(f"{server.url}/v1/models", cookies=session).status_code == 401  # the API wants the key itself
    assert httpx.get(f"{server.url}/dashboard/data", cookies={"adhere_session": "99999999999.abc"}).status_code == 401


def test_a_bug_or_a_failed_generation_is_a_500_without_a_traceback(served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, server = served
    url, body = f"{server.url}/v1/chat/completions", {"model": "p", "messages": chat("Hi"), "max_tokens": 2}

    def broken_encode(chat: Any) -> list[int]:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(server.engine, "encode", broken_encode)
    crashed = httpx.post(url, headers=auth(), json=body)
    error = error_of(crashed, 500)
    assert error["type"] == "server_error" and "secret internal detail" not in crashed.text
    monkeypatch.undo()

    def broken_generate(**kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(server.engine.backend.model, "generate", broken_generate)
    failed = httpx.post(url, headers=auth(), json=body)
    assert error_of(failed, 500)["code"] == "generation_failed" and "CUDA" not in failed.text
    monkeypatch.undo()
    assert httpx.post(url, headers=auth(), json=body).status_code == 200  # the worker goes on serving
    statuses = {r["id"]: (r["status"], r["finish_reason"]) for r in db_rows(folder, "SELECT * FROM requests")}
    assert statuses[failed.headers["x-request-id"]] == (500, "error")
    assert (500, None) in statuses.values()  # the crash, recorded without an outcome
