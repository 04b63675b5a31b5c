from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopline.errors import Reason, RecordError
from loopline.rows import count_rows, read_rows


def test_jsonl_events_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(
        json.dumps(
            {
                "entity_id": "u1",
                "event_id": "e1",
                "ts": "2026-01-01T00:00:00Z",
                "features": {"price": 3},
            }
        )
        + "\n\n"
        + json.dumps({"entity_id": "u1", "event_id": "e1", "label": True})
        + "\n"
    )
    event, label = list(read_rows(path))
    assert (event.entity_id, event.event_id, event.features) == ("u1", "e1", {"price": 3})
    assert event.ts == datetime(2026, 1, 1, tzinfo=UTC)
    assert label.is_label
    assert label.label == 1.0
    assert count_rows(path) == 3


def test_csv_columns_become_typed_features(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        "entity_id,price,device,discount,recent_views,label,event_id\nu1,3.5,mobile,true,,,\nu1,,,,,0,e9\n"
    )
    event, label = list(read_rows(path))
    assert event.features == {
        "price": 3.5,
        "device": "mobile",
        "discount": True,
        "recent_views": None,
    }
    assert (label.event_id, label.label) == ("e9", 0.0)


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    table = pa.table(
        {"entity_id": ["u1"], "ts": [datetime(2026, 1, 1, tzinfo=UTC)], "price": [2.0]}
    )
    pq.write_table(table, path)
    (row,) = read_rows(path)
    assert row.features == {"price": 2.0}
    assert row.ts == datetime(2026, 1, 1, tzinfo=UTC)
    assert count_rows(path) == 1


def test_bad_rows_raise_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"entity_id": "u1", "label": 1}\n')
    with pytest.raises(RecordError, match="row 1: a label row needs event_id") as info:
        list(read_rows(path))
    assert info.value.reason == Reason.MISSING_FIELD
    path.write_text("{oops\n")
    with pytest.raises(RecordError, match="line 1"):
        list(read_rows(path))


def test_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported file type"):
        list(read_rows(tmp_path / "rows.xlsx"))
