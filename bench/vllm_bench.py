"""Parity and speed of the vllm engine against LocalBackend on the embedded model, one CPU thread each.

    make vllm && .venv/bin/python bench/vllm_bench.py      # about 4 minutes on 2 cores

The 8 prompts of tests/test_vllm.py, greedy, up to 128 new tokens, answered by LocalBackend (float32,
batch 8) and by a vLLM CPU server in float32 and in bfloat16 (eager, 1 bound thread, 1 GiB KV cache;
all 8 requests in flight). Per run: answers identical to LocalBackend's, generated tokens/s over the
wall time of the 8 answers (server start not included), and the server's start time. Both engines get
one thread, so the figures compare engines, not thread counts, on a machine others share.

    .venv/bin/python bench/vllm_bench.py --ifeval 64 --threads 2    # IFEval's first 64 prompts: ~7 minutes

The same comparison on a subset of IFEval (the bundled 541 prompts; never training data), greedy, up to
512 new tokens, vLLM in float32 with 16 requests in flight: wall time, generated tokens/s and IFEval's
strict prompt-level score of each engine's answers. The full 541 take about 35 minutes with LocalBackend.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_vllm import CHATS

from adhere.generation import GenerationParams, LocalBackend, VllmBackend, VllmConfig
from adhere.models.config import ModelConfig

PARAMS = GenerationParams(max_new_tokens=128)
IFEVAL_PARAMS = GenerationParams(max_new_tokens=512)


def timed(backend: object, chats: list = CHATS, params: GenerationParams = PARAMS) -> tuple[list, float]:
    started = time.perf_counter()
    out = backend.generate(chats, params)  # type: ignore[attr-defined]
    return out, time.perf_counter() - started


def ifeval(n: int, threads: int) -> None:
    """IFEval's first `n` prompts through LocalBackend and through vLLM (float32), `threads` each, side by side."""
    from adhere.eval.ifeval import load_suite, score, summarize

    prompts = load_suite()[:n]
    chats = [[{"role": "user", "content": p.prompt}] for p in prompts]
    local, local_s = timed(LocalBackend.load(ModelConfig(), batch_size=8), chats, IFEVAL_PARAMS)
    cfg = VllmConfig(enforce_eager=True, cpu_threads=threads, cpu_kv_cache_gib=1, max_model_len=2048)
    with tempfile.TemporaryDirectory() as logs, VllmBackend(ModelConfig(), cfg, log_path=Path(logs) / "v.log") as vllm:
        vllm.start()
        out, seconds = timed(vllm, chats, IFEVAL_PARAMS)
        ready = vllm.server.start_seconds
    print(f"IFEval, first {n} of 541 prompts, greedy, up to {IFEVAL_PARAMS.max_new_tokens} new tokens, float32, {threads} thread(s) each")
    print("| engine | wall time | generated tokens | tokens/s | identical to LocalBackend | IFEval prompt strict | server ready after |")
    print("|---|---|---|---|---|---|---|")
    for name, answers, wall, start in (("LocalBackend", local, local_s, None), ("vLLM", out, seconds, ready)):
        tokens = sum(g.completion_tokens for g in answers)
        same = sum(a.text == b.text for a, b in zip(answers, local))
        strict = summarize(score(prompts, [g.text for g in answers]))["prompt_strict"]
        print(f"| {name} | {wall:.0f} s | {tokens} | {tokens / wall:.0f} | {same} of {n} | {strict:.3f} | "
              f"{f'{start:.0f} s' if start is not None else '-'} |")
    print(f"speed-up: {(sum(g.completion_tokens for g in out) / seconds) / (sum(g.completion_tokens for g in local) / local_s):.2f}x tokens/s")


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ifeval", type=int, default=0, metavar="N", help="IFEval's first N prompts instead of the 8")
    parser.add_argument("--threads", type=int, default=1, help="threads of each engine (with --ifeval)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads if args.ifeval else 1)
    if args.ifeval:
        return ifeval(args.ifeval, args.threads)
    local, local_s = timed(LocalBackend.load(ModelConfig(), batch_size=8))
    rows = [("LocalBackend float32", local, local_s, None)]
    for dtype in ("float32", "bfloat16"):
        cfg = VllmConfig(dtype=dtype, enforce_eager=True, cpu_threads=1, cpu_kv_cache_gib=1, max_model_len=2048)
        with tempfile.TemporaryDirectory() as logs, VllmBackend(ModelConfig(), cfg, log_path=Path(logs) / "v.log") as vllm:
            vllm.start()
            out, seconds = timed(vllm)
            rows.append((f"vLLM {dtype}", out, seconds, vllm.server.start_seconds))
    print("| engine | identical to LocalBackend | generated tokens | tokens/s | server ready after |")
    print("|---|---|---|---|---|")
    for name, out, seconds, start in rows:
        same = sum(a.text == b.text for a, b in zip(out, local))
        tokens = sum(g.completion_tokens for g in out)
        ready = f"{start:.0f} s" if start is not None else "-"
        print(f"| {name} | {same} of {len(out)} | {tokens} | {tokens / seconds:.0f} | {ready} |")
    for name, out, _, _ in rows[1:]:
        for a, b in zip(out, local):
            if a.text != b.text:
                print(f"\n{name} differs:\n  vLLM:  {a.text[:160]!r}\n  local: {b.text[:160]!r}")


if __name__ == "__main__":
    main()
