"""Reproducible sampling for the local backend: one seeded generator per prompt.

`model.generate(do_sample=True)` draws from torch's global generator, so an answer would depend
on which prompts shared its batch and in what order. Here each row draws from its own
generator, seeded from (params.seed, the prompt's token ids): the same prompt and seed give
the same answer alone, in any batch, in any run. The processor returns logits that are 0 at the
drawn token and -inf elsewhere, so generate's greedy step takes exactly that token. top_p keeps the
most likely tokens until their mass reaches it, and always the most likely one: top_p 0 is greedy.
"""

from __future__ import annotations

import hashlib
from typing import Any

from adhere.generation.backend import GenerationParams


def row_seed(seed: int, prompt: list[int]) -> int:
    """A 63-bit seed from the run's seed and one prompt's token ids."""
    digest = hashlib.sha256(f"{seed}:{','.join(map(str, prompt))}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seeded_sampler(prompts: list[list[int]], params: GenerationParams, device: Any, seeds: list[int] | None = None) -> Any:
    """A LogitsProcessor that samples row r of the batch with temperature and top-p from prompts[r]'s generator
    (seeded by `seeds[r]` when given: GRPO samples one prompt several times in a batch)."""
    import torch
    from transformers import LogitsProcessor

    class SeededSampler(LogitsProcessor):
        def __init__(self) -> None:
            rows = seeds if seeds is not None else [row_seed(params.seed, p) for p in prompts]
            self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in rows]

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            probs = torch.softmax(scores.float() / params.temperature, dim=-1)
            if params.top_p < 1.0:  # nucleus: keep the most likely tokens until their mass reaches top_p
                ordered, index = probs.sort(dim=-1, descending=True)
                drop = (ordered.cumsum(dim=-1) - ordered) >= params.top_p
                # The most likely token always stays: at top_p 0 the row would be all zeros, which
                # torch.multinomial refuses; keeping it makes top_p 0 greedy.
                drop[..., 0] = False
                ordered[drop] = 0.0
                probs = torch.zeros_like(probs).scatter_(-1, index, ordered)
            chosen = torch.cat([torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(self.generators)])
            out = torch.full_like(scores, float("-inf"))
            out[torch.arange(len(chosen), device=scores.device), chosen] = 0.0
            return out

    return SeededSampler()
