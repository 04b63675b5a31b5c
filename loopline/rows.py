"""Read events and labels from JSONL, CSV or Parquet files for ``loopline publish``.

A row is a label when it has a non-null ``label`` and no features; otherwise an
event. Event rows carry ``entity_id``, optional ``ts`` and ``event_id``, and either a
``features`` object (JSONL) or one column per feature (CSV, Parquet; empty = null).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from loopline.contracts import Features, FeatureValue, parse_ts
from loopline.errors import Reason, RecordError

RESERVED = {"entity_id", "event_id", "ts", "label", "features", "source", "schema_version"}


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    entity_id: str
    event_id: str | None
    ts: datetime | None
    features: Features | None = None
    label: float | None = None

    @property
    def is_label(self) -> bool:
        return self.features is None


def read_rows(path: Path) -> Iterator[Row]:
    """Rows of a file, by its suffix; a row that cannot be read raises RecordError."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        yield from _jsonl(path)
    elif suffix == ".csv":
        yield from _csv(path)
    elif suffix == ".parquet":
        yield from _parquet(path)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .csv or .parquet)")


def count_rows(path: Path) -> int | None:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open("rb") as f:
        lines = sum(1 for _ in f)
    return lines - 1 if path.suffix.lower() == ".csv" else lines


def _jsonl(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise RecordError(Reason.MALFORMED_JSON, f"line {number}: {exc}") from None
            if not isinstance(obj, dict):
                raise RecordError(Reason.WRONG_TYPE, f"line {number}: expected an object")
            yield _row(number, obj, nested=True)


def _csv(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8", newline="") as f:
        for number, record in enumerate(csv.DictReader(f), start=2):
            yield _row(number, {k: _csv_value(v) for k, v in record.items()}, nested=False)


def _csv_value(text: str | None) -> FeatureValue:
    if text is None or text == "":
        return None
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)  # type: ignore[no-any-return]
        except ValueError:
            pass
    return text


def _parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        for record in batch.to_pylist():
            number += 1
            if isinstance(record.get("ts"), datetime):
                record["ts"] = record["ts"].isoformat()
            yield _row(number, record, nested=False)


def _row(number: int, obj: dict[str, Any], *, nested: bool) -> Row:
    def fail(reason: Reason, what: str) -> RecordError:
        return RecordError(reason, f"row {number}: {what}")

    entity_id = obj.get("entity_id")
    if not isinstance(entity_id, str | int) or entity_id == "":
        raise fail(Reason.MISSING_FIELD, "entity_id")
    event_id = obj.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise fail(Reason.WRONG_TYPE, "event_id must be a string")
    try:
        ts = parse_ts(obj["ts"]) if obj.get("ts") is not None else None
    except RecordError as exc:
        raise fail(exc.reason, exc.detail) from None
    if nested:
        features = obj.get("features")
        if features is not None and not isinstance(features, dict):
            raise fail(Reason.WRONG_TYPE, "features must be an object")
    else:
        features = {k: v for k, v in obj.items() if k not in RESERVED}
        if not any(v is not None for v in features.values()):
            features = None
    label = obj.get("label")
    if features is None:
        if label is None:
            raise fail(Reason.MISSING_FIELD, "neither features (an event) nor label (a label)")
        if event_id is None:
            raise fail(Reason.MISSING_FIELD, "a label row needs event_id")
        if isinstance(label, bool):
            label = float(label)
        if not isinstance(label, int | float):
            raise fail(Reason.WRONG_TYPE, "label must be a number")
        return Row(number, str(entity_id), event_id, ts, None, float(label))
    return Row(number, str(entity_id), event_id, ts, features, None)
