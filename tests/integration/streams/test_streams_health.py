"""A bot burst makes the data-health monitor pause training, with the evidence, signed
with the streams workers' operator key."""

from __future__ import annotations

import time
from pathlib import Path

from loopline.contracts import CommandKind
from loopline.control import read_all, read_log
from loopline.publisher import Publisher
from loopline.settings import Settings
from loopline.signing.commands import MONITOR, write_operator_pair
from tests.integration.streams.streams_support import (
    partitions_taken,
    spec_variant,
    wait_for,
    worker,
)

HEALTH = {"window_seconds": 1, "baseline_windows": 3, "min_events": 20, "max_volume_ratio": 5.0}


def test_bot_burst_publishes_an_auto_pause_with_evidence(
    settings: Settings, tmp_path: Path
) -> None:
    monitor = write_operator_pair(tmp_path / "keys", MONITOR)
    settings = settings.replace(
        spec=spec_variant(tmp_path, health=HEALTH),
        operator_key=str(monitor.private),  # the worker's process gets it too
        operator_keys=str(monitor.public.parent),  # read_all keeps only verified Commands
    )
    with worker(settings, "w"), Publisher(settings) as pub:
        wait_for(lambda: partitions_taken(settings, "w"), 60, "the worker to take partitions")
        for second in range(6):
            for i in range(40):
                pub.event(f"u{i}", {"price": 10.0 + i % 7, "hour": 9, "device": "mobile"})
            pub.flush()
            time.sleep(1)
            assert not read_all(settings), f"no pause expected in normal traffic (second {second})"
        for i in range(3000):
            pub.event(f"bot{i % 5}", {"price": 499.0, "hour": 3, "device": "desktop"})
        pub.flush()
        wait_for(lambda: bool(read_all(settings)), 30, "an auto-pause")
    commands = read_all(settings)
    assert len(commands) == 1
    pause = commands[0]
    assert pause.kind is CommandKind.PAUSE and pause.scope == "*"
    assert pause.issued_by == "streams.health" and pause.signature
    assert not read_log(settings).refused
    checks = {b["check"] for b in pause.evidence["breaches"]}
    assert "volume_ratio" in checks
    volume = next(b for b in pause.evidence["breaches"] if b["check"] == "volume_ratio")
    assert volume["value"] > HEALTH["max_volume_ratio"]
    assert pause.evidence["window"]["start"] < pause.evidence["window"]["end"]
