"""Training examples and batches: records rendered once, grouped by length, padded on the right.

Every record goes through `models.masking.render`, the loss mask `adhere data
inspect` shows. Batches group examples of similar length (sorted within pools
of 50 batches, then the batches shuffled), so little compute goes to padding
while the order stays random.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from adhere.data.records import read_records  # noqa: F401  (re-exported: the loop reads records through here)
from adhere.errors import UserError
from adhere.models.masking import IGNORE_INDEX, render

POOL_BATCHES = 50  # batches per length-sorted pool: large enough to group lengths, small enough to stay random


@dataclass(frozen=True)
class Example:
    """One rendered record: token ids and labels (IGNORE_INDEX where not trained)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def build_examples(records: list[dict[str, Any]], tokenizer: Any, max_length: int, where: str) -> list[Example]:
    """Render every record; those that train nothing after truncation are skipped, but an empty result is an error."""
    examples = []
    for record in records:
        rendered = render(tokenizer, record["messages"], max_length=max_length)
        if rendered.trained_tokens:
            examples.append(Example(rendered.input_ids, rendered.labels))
    if not examples:
        detail = "it is empty" if not records else f"none of its {len(records)} examples has a token to train"
        raise UserError(f"{where}: {detail}; check `adhere data` output (stats.json, rejected.jsonl)")
    return examples


def epoch_batches(examples: list[Example], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Index batches for one epoch: seeded shuffle, length-grouped within pools, batches shuffled."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(examples)))
    rng.shuffle(order)
    batches = []
    pool = batch_size * POOL_BATCHES
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: len(examples[i].input_ids))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: list[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors: input_ids, attention_mask, and labels shifted for next-token prediction.

    `labels[t]` is the target for the prediction made at position t (the token
    at t+1), so the loss needs no shift later and positions are selected once.
    """
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    targets = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        mask[row, :n] = 1
        targets[row, : n - 1] = torch.tensor(example.labels[1:])
    return {"input_ids": ids, "attention_mask": mask, "targets": targets}


def plan_steps(examples: int, batch_size: int, grad_accum: int, epochs: float, max_steps: int | None, world: int = 1) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps): max_steps if set, else epochs' worth, at least 1."""
    per_epoch = math.ceil(math.ceil(examples / (batch_size * world)) / grad_accum)
    return per_epoch, max_steps or max(1, math.ceil(epochs * per_epoch))
