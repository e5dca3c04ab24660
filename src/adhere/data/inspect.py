"""See exactly which tokens train: records rendered with the model's chat template, trained tokens marked.

    adhere data inspect adhere.yaml --n 3          # colored in the terminal
    adhere data inspect adhere.yaml --n 3 --plain  # trained runs in [[...]]

Uses `models.masking.render`, the function training uses, on the curated
`workdir/data/train.jsonl`, or on the first source's rows before `adhere data`
has run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adhere.errors import UserError, require_files

if TYPE_CHECKING:
    from adhere.config import ProjectConfig


def sample_records(config: ProjectConfig, n: int) -> tuple[list[dict[str, Any]], str]:
    """The first `n` curated training records, or, before curation, the first `n` valid source rows."""
    curated = config.stage_dir("data") / "train.jsonl"
    if curated.is_file():
        with curated.open(encoding="utf-8") as handle:
            return [json.loads(line) for _, line in zip(range(n), handle)], str(curated)
    if not config.data.sources:
        raise UserError("nothing to inspect: data.sources is empty and there is no workdir/data/train.jsonl")
    from adhere.data.records import Rejection
    from adhere.data.stage import source_records

    source = config.data.sources[0]
    require_files({"data.sources[0].path": Path(source.path)})
    records = []
    for _, result in source_records(source, config.data, config.spec):
        if not isinstance(result, Rejection):
            records.append(result)
        if len(records) == n:
            break
    return records, f"{source.path} (not curated yet)"


def inspect(config: ProjectConfig, n: int, color: bool) -> list[str]:
    """One block of text per record: where it is from, its token counts, and the marked rendering."""
    from adhere.models import load_tokenizer
    from adhere.models.masking import format_mask, render

    records, origin = sample_records(config, n)
    tokenizer = load_tokenizer(config.model)
    blocks = []
    for record in records:
        rendered = render(tokenizer, record["messages"], max_length=config.train.max_length)
        meta = record.get("meta", {})
        head = f"{meta.get('source', origin)} {meta.get('row', '')}: {len(rendered.input_ids)} tokens, {rendered.trained_tokens} trained"
        blocks.append(head.strip() + "\n" + format_mask(tokenizer, rendered, color=color))
    return blocks
