"""Parity and speed of the vllm engine against LocalBackend on the embedded model, one CPU thread each.

    make vllm && .venv/bin/python bench/vllm_bench.py      # about 4 minutes on 2 cores

The 8 prompts of tests/test_vllm.py, greedy, up to 128 new tokens, answered by LocalBackend (float32,
batch 8) and by a vLLM CPU server in float32 and in bfloat16 (eager, 1 bound thread, 1 GiB KV cache;
all 8 requests in flight). Per run: answers identical to LocalBackend's, generated tokens/s over the
wall time of the 8 answers (server start not included), and the server's start time. Both engines get
one thread, so the figures compare engines, not thread counts, on a machine others share.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_vllm import CHATS  # noqa: E402  (the prompts of the parity test)

from adhere.generation import GenerationParams, LocalBackend, VllmBackend, VllmConfig  # noqa: E402
from adhere.models.config import ModelConfig  # noqa: E402

PARAMS = GenerationParams(max_new_tokens=128)


def timed(backend: object) -> tuple[list, float]:
    started = time.perf_counter()
    out = backend.generate(CHATS, PARAMS)  # type: ignore[attr-defined]
    return out, time.perf_counter() - started


def main() -> None:
    import torch

    torch.set_num_threads(1)
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
