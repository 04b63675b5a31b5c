"""`loopline dev up|status|down`, `topics create`, `publish` and `status`, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopline.devstack import free_port, port_open


def loopline(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "loopline", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"loopline {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env |= {
        "LOOPLINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "LOOPLINE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "LOOPLINE_STATE_DIR": str(tmp_path / "state"),
        "LOOPLINE_PARTITIONS": "2",
        "COLUMNS": "200",
        "LOOPLINE_ENV": "dev",  # as .loopline/dev/env, which `loopline dev up` writes, sets
    }
    return env


def test_dev_stack_lifecycle_and_publishing(stack_env: dict[str, str], tmp_path: Path) -> None:
    kafka_port = int(stack_env["LOOPLINE_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
    redis_port = int(stack_env["LOOPLINE_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    try:
        first = loopline(stack_env, "dev", "up").stdout
        assert "kafka" in first
        assert "started" in first
        assert "events (created)" in first.replace("\n", " ")
        assert port_open("127.0.0.1", kafka_port)
        assert port_open("127.0.0.1", redis_port)

        again = loopline(stack_env, "dev", "up").stdout
        assert "running" in again
        assert "(exists)" in again
        assert loopline(stack_env, "topics", "create").stdout.count("exists") == 7
        assert "up at" in loopline(stack_env, "dev", "status").stdout

        rows = tmp_path / "events.jsonl"
        rows.write_text(
            "\n".join(
                json.dumps(
                    {
                        "entity_id": f"u{i}",
                        "event_id": f"e{i}",
                        "features": {"price": 10.0 + i, "hour": 9, "device": "mobile"},
                    }
                )
                for i in range(5)
            )
            + "\n"
            + json.dumps({"entity_id": "u1", "event_id": "e1", "label": 1})
            + "\n"
        )
        csv = tmp_path / "events.csv"
        csv.write_text("entity_id,price,hour,device\nu9,3.5,10,tablet\nu9,-1,10,tablet\n")
        parquet = tmp_path / "events.parquet"
        pq.write_table(
            pa.table(
                {
                    "entity_id": ["p1", "p2"],
                    "price": [5.0, 6.0],
                    "hour": [1, 2],
                    "device": ["desktop", "desktop"],
                }
            ),
            parquet,
        )

        assert "published 5 events and 1 labels" in loopline(stack_env, "publish", str(rows)).stdout
        bad = loopline(stack_env, "publish", str(csv), check=False)
        assert bad.returncode == 1
        assert "published 1 events" in bad.stdout
        assert "out_of_range" in bad.stderr
        assert "published 2 events" in loopline(stack_env, "publish", str(parquet)).stdout

        status = json.loads(loopline(stack_env, "status", "--json").stdout)
        assert status["accounting"]["published"] == 8
        assert status["training"]["paused"] is False
        assert status["data_health"]["verdict"].startswith("unknown")
    finally:
        down = loopline(stack_env, "dev", "down").stdout
    assert "stopped" in down
    assert not port_open("127.0.0.1", kafka_port)
    assert "down at" in loopline(stack_env, "dev", "status").stdout


def test_clear_errors(stack_env: dict[str, str]) -> None:
    unknown = loopline(stack_env | {"LOOPLINE_KAFKA_BOOTSTAP": "x"}, "status", check=False)
    assert unknown.returncode == 2
    assert "LOOPLINE_KAFKA_BOOTSTAP" in unknown.stderr
    bad_spec = loopline(stack_env, "--spec", "/nonexistent.toml", "spec", check=False)
    assert bad_spec.returncode == 2
    assert "no such file" in bad_spec.stderr
