"""Reading source files row by row, with the location of every row.

A row that cannot be read (a malformed JSONL line, invalid UTF-8, a ragged CSV
row) comes out as a `RawRow` with a rejection, so it is accounted for like any
other dropped row. A file that cannot be read at all is a UserError naming it.
Parquet files and saved Hugging Face datasets are read through Arrow in batches,
so memory stays flat however many rows they hold.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from adhere.data.records import Rejection
from adhere.errors import UserError

ARROW_BATCH = 4096  # rows per Arrow batch: a few MB of text, a flat memory profile
SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")


@dataclass
class RawRow:
    """One input row: where it came from, and its fields or why they could not be read."""

    source: str
    location: str  # "line 12", "row 5", "item 3"
    fields: dict[str, Any] | None
    error: Rejection | None = None


def read_rows(path: str | Path) -> Iterator[RawRow]:
    """Every row of a file or saved dataset folder, in order."""
    path = Path(path)
    if path.is_dir():
        yield from _read_dataset_folder(path)
        return
    if not path.is_file():
        raise UserError(f"{path}: no such file or folder (data.sources)")
    suffix = path.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".json": _read_json, ".csv": _read_csv,
               ".tsv": _read_csv, ".parquet": _read_parquet}
    if suffix not in readers:
        raise UserError(f"{path}: unknown file type {suffix!r}; use one of {', '.join(SUFFIXES)} or a saved dataset folder")
    yield from readers[suffix](path)


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"line {number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRow(str(path), where, None, Rejection("invalid_utf8", f"byte {exc.start} is not valid UTF-8"))
                continue
            if not line.strip():
                continue  # blank lines are not rows
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield RawRow(str(path), where, None, Rejection("malformed_json", f"not valid JSON: {exc.msg} at column {exc.colno}"))
                continue
            yield _as_row(str(path), where, value)


def _read_json(path: Path) -> Iterator[RawRow]:
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 (byte {exc.start}); save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        hint = " (one JSON object per line? name it .jsonl)" if exc.msg == "Extra data" else ""
        raise UserError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}{hint}") from None
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if not isinstance(value, list):
        raise UserError(f"{path}: expected a JSON list of rows (or {{\"data\": [...]}}), got {type(value).__name__}")
    for number, item in enumerate(value, start=1):
        yield _as_row(str(path), f"item {number}", item)


def _read_csv(path: Path) -> Iterator[RawRow]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad row is rejected, not the file.
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        if not reader.fieldnames:
            raise UserError(f"{path}: empty CSV, expected a header row")
        width = len(reader.fieldnames)
        for number, row in enumerate(reader, start=2):  # line 1 is the header
            where = f"row {number - 1} (line {reader.line_num})"
            if None in row:
                yield RawRow(str(path), where, None, Rejection("malformed_csv", f"{width + len(row[None])} fields, the header has {width}"))
                continue
            missing = [k for k, v in row.items() if v is None]
            if missing:
                yield RawRow(str(path), where, None, Rejection("missing_field", f"no value for column {missing[0]!r} ({width} expected)"))
                continue
            bad = [k for k, v in row.items() if _has_surrogate(v)]
            if bad:
                yield RawRow(str(path), where, None, Rejection("invalid_utf8", f"column {bad[0]!r} has bytes that are not valid UTF-8"))
                continue
            yield RawRow(str(path), where, dict(row))


def _has_surrogate(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _read_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise UserError(f"{path}: not a readable Parquet file ({exc})") from None
    number = 0
    for batch in table.iter_batches(batch_size=ARROW_BATCH):
        for row in batch.to_pylist():
            number += 1
            yield RawRow(str(path), f"row {number}", row)


def _read_dataset_folder(path: Path) -> Iterator[RawRow]:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: a folder, but not a dataset saved with save_to_disk") from None
    if isinstance(data, DatasetDict):
        if "train" not in data:
            raise UserError(f"{path}: a dataset with splits {sorted(data)}; save the one to use, or name a 'train' split")
        data = data["train"]
    assert isinstance(data, Dataset)
    number = 0
    for batch in data.iter(batch_size=ARROW_BATCH):
        keys = list(batch)
        for values in zip(*(batch[k] for k in keys)):
            number += 1
            yield RawRow(str(path), f"row {number}", dict(zip(keys, values)))


def _as_row(source: str, where: str, value: Any) -> RawRow:
    if not isinstance(value, dict):
        return RawRow(source, where, None, Rejection("wrong_type", f"expected a JSON object, got {type(value).__name__}"))
    return RawRow(source, where, value)
