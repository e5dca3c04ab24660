"""Step 6, the worker: batching without mixing answers, a full queue, clients that leave, timeouts.

Many requests share one model: interleaved streamed and whole answers must each equal the answer
generated alone, a full queue answers 429 with Retry-After, a client that disconnects mid-stream
frees its slot at once, and a request past serve.request_timeout_s ends with 504.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_serve_support import (  # noqa: F401  (fixtures)
    auth,
    chat,
    client,
    db_rows,
    long_tiny_dir_fixture,
    one_torch_thread_fixture,
    start_server,
)

PROMPTS = [f"Question {i}: review this Python code." for i in range(8)]


def test_stop_sequences_are_found_and_held_back_across_tokens() -> None:
    from adhere.serve.engine import _find_stop, _held_back

    assert _find_stop("abc END x", ("END",), before=0) == 4
    assert _find_stop("abc EN", ("END",), before=0) is None
    assert _find_stop("xy STOP", ("STOP",), before=4) == 3  # "STOP" completes in the new text "TOP"
    assert _find_stop("abc END", ("END", "a"), before=5) == 4  # "a" was complete before: found then, not now
    assert _held_back("hello EN", ("END",)) == 2  # "EN" may become "END": not sent yet
    assert _held_back("hello E", ("END", "E!")) == 1
    assert _held_back("hello", ("END",)) == 0
    assert _held_back("ab", ("abc",)) == 2


def test_interleaved_streamed_and_whole_answers_equal_their_answers_alone(tmp_path: Path, long_tiny_dir: Path) -> None:
    from adhere.generation import GenerationParams, LocalBackend

    expected = LocalBackend.load(long_tiny_dir).generate([chat(p) for p in PROMPTS],
                                                         GenerationParams(max_new_tokens=48, temperature=1.0, seed=5))
    with start_server(tmp_path, long_tiny_dir, spec_yaml="") as server:
        openai, answers = client(server), {}

        def ask(i: int) -> None:
            if i % 2:  # odd: streamed, even: whole
                chunks = openai.chat.completions.create(model="p", messages=chat(PROMPTS[i]), max_tokens=48,
                                                        temperature=1.0, seed=5, stream=True)
                answers[i] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                answers[i] = openai.chat.completions.create(model="p", messages=chat(PROMPTS[i]), max_tokens=48,
                                                            temperature=1.0, seed=5).choices[0].message.content

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(PROMPTS))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        batches = server.state.metrics.batch_size.collect()[0].samples
    assert answers == {i: g.text for i, g in enumerate(expected)}
    assert len(set(answers.values())) == len(PROMPTS)  # eight different answers, none swapped
    count = next(s.value for s in batches if s.name.endswith("_count"))
    total = next(s.value for s in batches if s.name.endswith("_sum"))
    assert total == len(PROMPTS) and count < len(PROMPTS)  # some requests shared a batch


class OpenStream:
    """A streaming request read up to its first content chunk, held open until `close` (the client leaves)."""

    def __init__(self, url: str, max_tokens: int) -> None:
        self._context = httpx.stream("POST", f"{url}/v1/chat/completions", headers=auth(), timeout=30, json={
            "model": "p", "messages": chat("Hi"), "max_tokens": max_tokens, "stream": True})
        # The line iterator must outlive this call: when it is garbage collected, httpx closes the connection.
        self._lines = self._context.__enter__().iter_lines()
        while '"content": ""' in (line := next(self._lines)) or not line:  # the role chunk, blank separators
            pass
        assert '"content"' in line

    def close(self) -> None:
        self._lines.close()
        self._context.__exit__(None, None, None)


def test_a_full_queue_answers_429_and_a_client_that_leaves_frees_its_slot(tmp_path: Path, long_tiny_dir: Path) -> None:
    serve = "  max_queue: 2\n  batch_size: 1\n  max_tokens: 4000\n"
    with start_server(tmp_path, long_tiny_dir, serve) as server:
        url = server.url
        first = OpenStream(url, 4000)  # generating: 4000 tokens would take seconds
        second: dict[str, Any] = {}
        waiter = threading.Thread(target=lambda: second.update(stream=OpenStream(url, 4000)))
        waiter.start()  # admitted, waiting for the worker (batch_size 1)
        deadline = time.monotonic() + 10
        while server.engine.depth() != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        full = httpx.post(f"{url}/v1/chat/completions", headers=auth(), json={"model": "p", "messages": chat("Hi")})
        assert full.status_code == 429 and full.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(full.headers["retry-after"]) <= 60
        left_at = time.monotonic()
        first.close()  # the client disconnects mid-stream: its row ends, the waiting request starts
        waiter.join(10)
        assert "stream" in second and time.monotonic() - left_at < 5
        third: dict[str, Any] = {}
        asker = threading.Thread(target=lambda: third.update(response=httpx.post(
            f"{url}/v1/chat/completions", headers=auth(), timeout=30,
            json={"model": "p", "messages": chat("Hi"), "max_tokens": 2})))
        asker.start()  # admitted now that a slot is free; waits for the second stream
        second["stream"].close()
        asker.join(30)
        assert third["response"].status_code == 200  # the second stream's record is written right after its disconnect
    rows = db_rows(tmp_path, "SELECT status, finish_reason, completion_tokens, stream FROM requests ORDER BY created")
    assert [(r["status"], r["finish_reason"]) for r in rows] == [(499, "cancelled"), (499, "cancelled"), (429, None),
                                                                (200, "length")]
    assert all(0 < r["completion_tokens"] < 4000 for r in rows if r["status"] == 499)  # stopped early


def test_a_request_past_its_timeout_ends_with_504(tmp_path: Path, long_tiny_dir: Path) -> None:
    with start_server(tmp_path, long_tiny_dir, "  max_tokens: 4000\n  request_timeout_s: 0.4\n") as server:
        started = time.monotonic()
        whole = httpx.post(f"{server.url}/v1/chat/completions", headers=auth(), timeout=30,
                           json={"model": "p", "messages": chat("Hi"), "max_tokens": 4000})
        elapsed = time.monotonic() - started
        assert whole.status_code == 504 and whole.json()["error"]["code"] == "timeout" and elapsed < 3
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", headers=auth(), timeout=30,
                          json={"model": "p", "messages": chat("Hi"), "max_tokens": 4000, "stream": True}) as stream:
            lines = [line for line in stream.iter_lines() if line]
        assert stream.status_code == 200  # the stream had started; the error comes as its last event
        assert '"code": "timeout"' in lines[-2] and lines[-1] == "data: [DONE]"
    rows = db_rows(tmp_path, "SELECT status, finish_reason, completion_tokens FROM requests ORDER BY created")
    assert [(r["status"], r["finish_reason"]) for r in rows] == [(504, "timeout"), (504, "timeout")]
    assert all(0 < r["completion_tokens"] < 4000 for r in rows)


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_waiting_in_the_queue_when_its_client_leaves_never_runs(tmp_path: Path, long_tiny_dir: Path,
                                                                          stream: bool) -> None:
    with start_server(tmp_path, long_tiny_dir, "  batch_size: 1\n  max_tokens: 4000\n") as server:
        busy = OpenStream(server.url, 4000)
        body = {"model": "p", "messages": chat("Hi"), "max_tokens": 8, "stream": stream}
        with pytest.raises(httpx.ReadTimeout):  # gives up while its request waits behind the busy one
            httpx.post(f"{server.url}/v1/chat/completions", headers=auth(), json=body, timeout=0.5)
        deadline = time.monotonic() + 5
        while server.engine.depth() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.engine.depth() == 0  # taken out of the queue at once, not when the busy one ends
        busy.close()
    rows = db_rows(tmp_path, "SELECT status, finish_reason, completion_tokens FROM requests ORDER BY created")
    assert min((r["status"], r["finish_reason"], r["completion_tokens"]) for r in rows) == (499, "cancelled", 0)
