"""Benchmark of the serve stage: what the server adds over calling the model directly, and latency under load.

    .venv/bin/python bench/serve_bench.py                          # about 6 minutes on 2 cores
    .venv/bin/python bench/serve_bench.py --requests 4 --no-docs   # a quick look

Overhead: one `adhere.serve.Server` on the embedded SmolLM2-135M-Instruct (float32, greedy), and
the same loaded model called directly through `LocalBackend.generate` (the server's own backend
object, so the weights, threads and numerics are the same). Each prompt is answered three ways,
one after the other, the order rotating from prompt to prompt so a drift in machine load falls on
all three alike: directly; through the server with the official `openai` client; and streamed.
Every server answer must equal the direct one. The overhead (target under 5%) is measured two
ways: within each server request, its time outside the model over its time in the model (which
monitor.db records), immune to the machine's load; and end to end, the server's total time over
the direct total, which on a shared machine also carries the drift between calls (see `report`).

Fixed cost: the same three ways on the tiny random model of tests/tiny.py (one thread, 64
tokens), where an answer takes ~0.1 s, so the milliseconds the server adds per request show
above the noise: the median of the paired differences, server less direct.

Load: the test's load (tests/test_serve_load.py) with its figures: 32 concurrent async `openai`
clients, 4 requests each, half streamed, 16 tokens, on the tiny random model of tests/tiny.py,
so the figures are the server's own costs (HTTP, queue, batching, recording) rather than the
model's. The clients share the server's process (and its GIL), as in the test.

The table goes to stdout and, unless --no-docs, between this script's markers at the end of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from docs_block import cpu_name, write_block

sys.path.insert(0, str(ROOT / "tests"))  # tiny.py, for the load run

HEADING = "## Serving: overhead over the model, and latency under load (`bench/serve_bench.py`)"
BEGIN, END = "<!-- serve_bench.py writes from here -->", "<!-- serve_bench.py to here -->"
PROMPTS = [
    "Write one sentence about rivers.",
    "Review this function: def add(a, b): return a - b",
    "Give three tips for writing clear commit messages.",
    "What does HTTP status 429 mean?",
    "Summarise what a KV cache does in a transformer.",
    "Rewrite in plain English: the API is idempotent.",
    "List two differences between a list and a tuple in Python.",
    "Explain what a SQLite write-ahead log is for.",
]
TARGET_OVERHEAD = 0.05
LOAD_CLIENTS, LOAD_REQUESTS, LOAD_TOKENS = 32, 4, 16


def project(folder: Path, model: str, serve: dict[str, Any]) -> Any:
    from adhere.config import load_config

    (folder / "adhere.yaml").write_text(json.dumps({"name": "bench", "model": {"base": model},
                                                    "serve": {"weights": "base", **serve}}))  # JSON is YAML
    return load_config(folder / "adhere.yaml")


def overhead(model: str, requests: int, max_tokens: int) -> dict[str, Any]:
    """Direct, server and streamed times for each prompt, answers compared."""
    from openai import OpenAI

    from adhere.generation import GenerationParams
    from adhere.serve import Server

    params = GenerationParams(max_new_tokens=max_tokens)
    with tempfile.TemporaryDirectory() as tmp, Server(project(Path(tmp), model, {}), port=0, quiet=True,
                                                      insecure=True) as server:
        backend, openai = server.engine.backend, OpenAI(base_url=f"{server.url}/v1", api_key="-", max_retries=0)
        chat = lambda i: [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]

        def direct(i: int) -> tuple[str, int]:
            answer = backend.generate([chat(i)], params)[0]
            return answer.text, answer.completion_tokens

        ids: dict[str, list[str]] = {"server": [], "streamed": []}  # to find each request in monitor.db

        def whole(i: int) -> tuple[str, int]:
            answer = openai.chat.completions.create(model="bench", messages=chat(i), max_tokens=max_tokens)
            ids["server"].append(answer.id)
            return answer.choices[0].message.content, answer.usage.completion_tokens

        def streamed(i: int) -> tuple[str, int]:
            chunks = list(openai.chat.completions.create(model="bench", messages=chat(i), max_tokens=max_tokens,
                                                         stream=True, stream_options={"include_usage": True}))
            ids["streamed"].append(chunks[0].id)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[-1].usage.completion_tokens

        ways = {"direct": direct, "server": whole, "streamed": streamed}
        for way in ways.values():  # warm-up: first calls build caches and import lazily
            way(0)
        times: dict[str, list[float]] = {name: [] for name in ways}
        cpu: dict[str, list[float]] = {name: [] for name in ways}  # CPU seconds of this process, all its threads
        tokens, mismatches = 0, 0
        for i in range(requests):
            names = list(ways)[i % 3:] + list(ways)[:i % 3]
            answers = {}
            for name in names:
                started, cpu_started = time.perf_counter(), time.process_time()
                answers[name] = ways[name](i)
                times[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - cpu_started)
            tokens += answers["direct"][1]
            mismatches += sum(answers[name] != answers["direct"] for name in ("server", "streamed"))
        threads = __import__("torch").get_num_threads()
        in_model = model_seconds(server.monitor.path, ids)
    return {"times": times, "cpu": cpu, "tokens": tokens, "mismatches": mismatches, "threads": threads,
            "in_model": in_model}


def model_seconds(db: Path, ids: dict[str, list[str]]) -> dict[str, list[float]]:
    """For each measured server request (warm-up left out), the seconds it spent in the model, from monitor.db."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        spent = dict(conn.execute("SELECT id, generate_s FROM requests").fetchall())
    return {way: [spent[i] for i in found[1:]] for way, found in ids.items()}


def fixed_cost(requests: int) -> dict[str, Any]:
    """`overhead` on the tiny model (one thread, 64 tokens): what the server costs when the model costs little.

    A difference of two runs of several seconds each cannot resolve a few milliseconds on a busy
    machine; on a model that answers in ~0.1 s, the median of paired differences can.
    """
    import torch
    from tiny import save_tiny_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return overhead(str(save_tiny_model(Path(tmp) / "tiny")), requests, 64)
    finally:
        torch.set_num_threads(threads)


def load() -> dict[str, Any]:
    """The load test's run: latencies from the clients' side, every request checked in monitor.db."""
    import sqlite3

    import torch
    from openai import AsyncOpenAI
    from tiny import save_tiny_model

    from adhere.serve import Server

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the test does: a 32-wide model on two threads only waits for them
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_model(Path(tmp) / "tiny")
        with Server(project(Path(tmp), str(model), {"batch_size": 8}), port=0, quiet=True, insecure=True) as server:
            async def client(worker: int, openai: Any) -> None:
                for n in range(LOAD_REQUESTS):
                    messages = [{"role": "user", "content": f"Client {worker}, request {n}: review this code."}]
                    started = time.perf_counter()
                    if (worker + n) % 2:
                        [_ async for _ in await openai.chat.completions.create(
                            model="bench", messages=messages, max_tokens=LOAD_TOKENS, stream=True)]
                    else:
                        await openai.chat.completions.create(model="bench", messages=messages, max_tokens=LOAD_TOKENS)
                    latencies.append(time.perf_counter() - started)

            async def everyone() -> None:
                openai = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="-", max_retries=0)
                await asyncio.gather(*(client(w, openai) for w in range(LOAD_CLIENTS)))
                await openai.close()

            started = time.perf_counter()
            asyncio.run(everyone())
            elapsed = time.perf_counter() - started
            batches = {s.name: s.value for s in server.state.metrics.batch_size.collect()[0].samples}
        with sqlite3.connect(Path(tmp) / "runs" / "bench" / "serve" / "monitor.db") as db:
            recorded = db.execute("SELECT COUNT(*) FROM requests WHERE status = 200").fetchone()[0]
    torch.set_num_threads(threads)
    ordered = sorted(latencies)
    rank = lambda q: ordered[max(0, math.ceil(q * len(ordered)) - 1)]
    return {"n": len(latencies), "recorded": recorded, "elapsed": elapsed, "p50": rank(0.5), "p99": rank(0.99),
            "mean_batch": batches["adhere_batch_size_sum"] / batches["adhere_batch_size_count"]}


def report(o: dict[str, Any], fixed: dict[str, Any] | None, load_run: dict[str, Any] | None) -> str:
    """The table, and the overhead two ways.

    In-request accounting: the server's requests' time outside the model (their client-side time
    less the seconds monitor.db records them in the model) over their time in the model. It
    compares parts of the same requests, so the machine's load cannot fake or hide it.
    End to end: the ratio of totals, each prompt answered all three ways within seconds in
    rotating order. On a shared 2-core machine one prompt's ratio swings by tens of percent, so
    the model's own time inside the server's requests is shown against the direct calls beside it.
    """
    times = o["times"]
    total = {name: sum(values) for name, values in times.items()}
    over = {name: total[name] / total["direct"] - 1 for name in ("server", "streamed")}
    lines = ["| | total | median per request | tokens / s | overhead (totals) | paired ratios - 1: median (range) |",
             "|---|---|---|---|---|---|"]
    for name, label in (("direct", "LocalBackend.generate, direct"), ("server", "server, openai client"),
                        ("streamed", "server, openai client, streamed")):
        paired = sorted(w / d - 1 for w, d in zip(times[name], times["direct"]))
        spread = "-" if name == "direct" else (
            f"{100 * statistics.median(paired):+.1f}% ({100 * paired[0]:+.1f}% to {100 * paired[-1]:+.1f}%)")
        change = "-" if name == "direct" else f"{100 * over[name]:+.1f}%"
        lines.append(f"| {label} | {total[name]:.1f} s | {statistics.median(times[name]):.2f} s | "
                     f"{o['tokens'] / total[name]:.1f} | {change} | {spread} |")
    in_model = {way: sum(v) for way, v in o["in_model"].items()}
    outside = {way: (total[way] - in_model[way]) / in_model[way] for way in in_model}
    lines.append(f"| time in the model, server requests (from monitor.db) | {in_model['server']:.1f} s, "
                 f"{in_model['streamed']:.1f} s streamed | | | | |")
    lines.append("")
    worst = max(outside.values())
    lines.append(
        f"- overhead, in-request accounting: the server's requests spent {100 * outside['server']:.2f}% of their time "
        f"in the model outside it ({100 * outside['streamed']:.2f}% streamed): HTTP, the openai client, queueing, "
        f"decoding, checks, recording (target under {100 * TARGET_OVERHEAD:.0f}%): "
        f"{'met' if worst < TARGET_OVERHEAD else 'NOT met'}.")
    spread = sorted(w / d - 1 for name in over for w, d in zip(times[name], times["direct"]))
    drift = {way: in_model[way] / total["direct"] - 1 for way in in_model}
    lines.append(
        f"- overhead, end to end: {100 * over['server']:+.1f}% by totals ({100 * over['streamed']:+.1f}% streamed), "
        f"one prompt's ratio ranging from {100 * spread[0]:+.1f}% to {100 * spread[-1]:+.1f}%. Inside the server's "
        f"requests the model itself took {100 * drift['server']:+.1f}% ({100 * drift['streamed']:+.1f}% streamed) "
        "of the direct calls' time, with the same weights and threads: that part of the difference is the "
        f"machine's drift between calls. {o['tokens']} tokens per way; answers different from the direct ones: "
        f"{o['mismatches']}.")
    if fixed:
        cost = {name: statistics.median(w - d for w, d in zip(fixed["times"][name], fixed["times"]["direct"]))
                for name in ("server", "streamed")}
        direct = statistics.median(times["direct"])
        lines.append(
            f"- fixed cost, on the tiny model ({len(fixed['times']['direct'])} prompts x 64 tokens, one thread, median "
            f"direct {1000 * statistics.median(fixed['times']['direct']):.0f} ms): the server adds "
            f"{1000 * cost['server']:.1f} ms per request ({1000 * cost['streamed']:.1f} ms streamed), median of paired "
            f"differences; that is {100 * max(cost.values()) / direct:.2f}% of the embedded model's median direct "
            f"request ({direct:.2f} s).")
    if load_run:
        lines.append(
            f"- load: {load_run['n']} requests from {LOAD_CLIENTS} clients in {load_run['elapsed']:.2f} s "
            f"({load_run['n'] / load_run['elapsed']:.1f} requests/s), latency p50 {1000 * load_run['p50']:.0f} ms, "
            f"p99 {1000 * load_run['p99']:.0f} ms, mean batch {load_run['mean_batch']:.1f}; errors 0; "
            f"recorded in monitor.db: {load_run['recorded']} of {load_run['n']}.")
    return "\n".join(lines)


def write_docs(table: str, facts: dict[str, Any], args: argparse.Namespace) -> None:
    """Put the table between BEGIN and END under HEADING at the end of docs/benchmarks.md."""
    import torch
    import transformers

    command = " ".join([".venv/bin/python bench/serve_bench.py", *sys.argv[1:]])
    cpu = cpu_name()
    intro = (
        f"`{command}` on {datetime.date.today().isoformat()}: {os.cpu_count()} CPU cores ({cpu or platform.machine()}), "
        f"torch {torch.__version__} ({facts['threads']} threads), transformers {transformers.__version__}. "
        f"SmolLM2-135M-Instruct (embedded, float32), greedy, up to {args.max_tokens} new tokens for each of "
        f"{args.requests} prompts, one request at a time, answered directly, through the server and streamed "
        "through the server in rotating order. Client, server and model share one process."
    )
    write_block(HEADING, BEGIN, END, f"{intro}\n\n{table}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16, help="prompts answered each way")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--fixed-requests", type=int, default=40, help="prompts for the tiny-model fixed-cost run")
    parser.add_argument("--no-load", action="store_true", help="skip the 32-client load run")
    parser.add_argument("--no-docs", action="store_true", help="print the table only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    from adhere.models.config import EMBEDDED_MODEL

    o = overhead(EMBEDDED_MODEL, args.requests, args.max_tokens)
    fixed = fixed_cost(args.fixed_requests) if args.fixed_requests else None
    load_run = None if args.no_load else load()
    table = report(o, fixed, load_run)
    print(table)
    if not args.no_docs:
        write_docs(table, o, args)


if __name__ == "__main__":
    main()
