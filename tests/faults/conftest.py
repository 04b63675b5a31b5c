"""Fault-injection scenarios: each runs real worker processes; see ``tests/faults/harness.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from feature_repo.definitions import project_name
from loopline.settings import Settings


@pytest.fixture(autouse=True)
def _drop_feature_keys(request: pytest.FixtureRequest) -> Iterator[None]:
    """Online-store keys the workers wrote to the shared Redis (they end with the project)."""
    settings: Settings | None = (
        request.getfixturevalue("settings") if "settings" in request.fixturenames else None
    )
    yield
    if settings is None:
        return
    client = redis.Redis.from_url(settings.redis_url)
    with client:
        pattern = b"*" + project_name(settings.topic_prefix).encode()
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
