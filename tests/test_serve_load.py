"""Step 6 under load: 32 concurrent clients on loopback, streamed and whole, with zero errors and every request recorded.

    .venv/bin/python -m pytest tests/test_serve_load.py -q -s    # -s shows the latency line

32 clients each send 4 requests back to back (128 in all, half of them streamed) through the
official async openai client to a server on the tiny model (batch_size 8, 16 tokens each). Latency
is measured by the client, from sending to the last byte; p50 and p99 are printed.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest
from test_serve_support import (  # noqa: F401  (fixtures)
    API_KEY,
    chat,
    db_rows,
    long_tiny_dir_fixture,
    one_torch_thread_fixture,
    start_server,
)

CLIENTS = 32
REQUESTS_PER_CLIENT = 4
MAX_TOKENS = 16


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1.0)) == (50.0, 99.0, 100.0)
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0


async def one_client(openai: object, worker: int, latencies: list[float], ids: list[str]) -> None:
    for n in range(REQUESTS_PER_CLIENT):
        messages = chat(f"Client {worker}, request {n}: review this Python code.")
        started = time.perf_counter()
        if (worker + n) % 2:
            stream = await openai.chat.completions.create(  # type: ignore[attr-defined]
                model="p", messages=messages, max_tokens=MAX_TOKENS, stream=True)
            chunks = [chunk async for chunk in stream]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            ids.append(chunks[0].id)
            assert chunks[-1].choices[0].finish_reason == "length"
        else:
            answer = await openai.chat.completions.create(  # type: ignore[attr-defined]
                model="p", messages=messages, max_tokens=MAX_TOKENS)
            text = answer.choices[0].message.content
            ids.append(answer.id)
            assert answer.usage.completion_tokens == MAX_TOKENS
        latencies.append(time.perf_counter() - started)
        assert text == "\n" * MAX_TOKENS  # greedy on the tiny model: its prompt's last token, repeated


@pytest.mark.timeout(120)
def test_32_concurrent_clients_get_answers_with_zero_errors(tmp_path: Path, long_tiny_dir: Path) -> None:
    from openai import AsyncOpenAI

    latencies: list[float] = []
    ids: list[str] = []
    with start_server(tmp_path, long_tiny_dir, "  batch_size: 8\n  max_queue: 64\n") as server:
        async def run() -> None:
            openai = AsyncOpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=60)
            try:
                await asyncio.gather(*(one_client(openai, w, latencies, ids) for w in range(CLIENTS)))
            finally:
                await openai.close()

        started = time.perf_counter()
        asyncio.run(run())
        elapsed = time.perf_counter() - started
        batches = {s.name: s.value for s in server.state.metrics.batch_size.collect()[0].samples}
    total = CLIENTS * REQUESTS_PER_CLIENT
    assert len(latencies) == len(ids) == total  # every request answered; any error would have raised
    rows = db_rows(tmp_path, "SELECT id, status, stream, completion_tokens FROM requests")
    assert {r["id"] for r in rows} == set(ids) and len(rows) == total  # every request recorded, once
    assert all(r["status"] == 200 and r["completion_tokens"] == MAX_TOKENS for r in rows)
    assert sum(r["stream"] for r in rows) == total // 2
    assert batches["adhere_batch_size_sum"] == total and batches["adhere_batch_size_count"] < total  # batched
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(f"\nload: {total} requests from {CLIENTS} clients in {elapsed:.2f} s ({total / elapsed:.1f} req/s), "
          f"latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
          f"mean batch {batches['adhere_batch_size_sum'] / batches['adhere_batch_size_count']:.1f}")
    assert p50 <= p99
