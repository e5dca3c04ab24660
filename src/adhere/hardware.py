"""What this machine can compute on: CPU threads, bf16 support, GPUs.

One place answers these questions for model loading, training, `adhere doctor`
and the `env.json` every stage writes.
"""

from __future__ import annotations

import os
import platform
from typing import Any


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 math (AVX-512 BF16 or AMX).

    On such CPUs bf16 autocast roughly doubles training speed (measured on a
    2-core AVX-512 BF16 machine); elsewhere bf16 is emulated and slower than fp32.
    """
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def default_device() -> str:
    """'cuda' when a CUDA GPU is usable, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_available(device: str) -> bool:
    """Whether bf16 is fast on `device` ('cpu' or 'cuda...')."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


def describe() -> dict[str, Any]:
    """CPU and GPU facts for env.json and doctor."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16": cpu_supports_bf16(),
        "cuda": torch.version.cuda,
        "gpus": gpus,
    }
