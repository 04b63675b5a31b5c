"""Serving as a real process, at its front door: what an anonymous caller can do to it.

An oversized ``/predict`` body is refused before it is read, whether its
``Content-Length`` says so or it comes chunked, and the process's peak RSS barely
moves; probes tell a load balancer what it needs and keep the rest for the token;
Prometheus reads the metrics port.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from pydantic import SecretStr

from loopline.devstack import free_port
from loopline.settings import Settings
from tests.integration.serving.serving_support import (
    offer_body,
    peak_rss_kib,
    serving_process,
    wait_for,
)

TOKEN = "front-door-token"
AUTH = f"Authorization: Bearer {TOKEN}"
MIB = 1024 * 1024
BODY_BYTES = 200 * MIB
REQUEST = {
    "entity_id": "u1",
    "features": {"price": 20.0, "category": "alpaca", "hour": 9, "device": "mobile"},
}


def body(chunk_bytes: int = 64 * 1024) -> Iterator[bytes]:
    """200 MiB of JSON whitespace, made as it is sent."""
    chunk = b" " * chunk_bytes
    for _ in range(BODY_BYTES // chunk_bytes):
        yield chunk


def status(client: httpx.Client, path: str) -> int:
    try:
        return client.get(path).status_code
    except httpx.TransportError:
        return 0


def test_oversized_bodies_are_refused_unread_and_peak_rss_stays(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    run = settings.replace(serving_port=port, serving_token=SecretStr(TOKEN))
    with serving_process(run, tmp_path / "serving.log") as process:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            wait_for(lambda: status(client, "/livez") == 200, "serving to start", timeout=90)
            # Whatever an ordinary request allocates once is allocated before measuring.
            headers = {"Authorization": f"Bearer {TOKEN}"}
            for _ in range(3):
                assert client.post("/predict", json=REQUEST, headers=headers).status_code == 200
        before = peak_rss_kib(process.pid)
        declared = offer_body(port, body(), content_length=BODY_BYTES, headers=[AUTH])
        chunked = offer_body(port, body(), content_length=None, headers=[AUTH])
        anonymous = offer_body(port, body(), content_length=None)
        with ThreadPoolExecutor(4) as pool:
            at_once = list(
                pool.map(
                    lambda _: offer_body(port, body(), content_length=None, headers=[AUTH]),
                    range(4),
                )
            )
        after = peak_rss_kib(process.pid)
        assert process.poll() is None, (tmp_path / "serving.log").read_text()
    sent = [s for _, s in [declared, chunked, anonymous, *at_once]]
    print(f"serving peak RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after;")
    print(f"body bytes sent before each answer: {sent}")
    for line, _ in [declared, chunked, *at_once]:
        assert line.startswith(b"HTTP/1.1 413 "), line
    assert anonymous[0].startswith(b"HTTP/1.1 401 "), anonymous
    # The refusal came long before the body was through (kernel buffers hold a few MiB).
    for _, sent in [declared, chunked, anonymous, *at_once]:
        assert sent < BODY_BYTES // 4, sent
    assert after - before < 10 * 1024, (before, after)


def test_probes_keep_details_for_the_token_and_metrics_are_on_their_own_port(
    settings: Settings, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    run = settings.replace(
        serving_port=port, metrics_port=metrics_port, serving_token=SecretStr(TOKEN)
    )
    with (
        serving_process(run, tmp_path / "serving.log"),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        wait_for(lambda: status(client, "/livez") == 200, "serving to start", timeout=90)
        anonymous = client.get("/healthz")
        full = client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
        wrong = client.get("/healthz", headers={"Authorization": "Bearer nope"})
        public_metrics = client.get("/metrics")
        token_metrics = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    # Nothing routed: only the fallback answers, which a load balancer must see.
    assert anonymous.status_code == full.status_code == wrong.status_code == 503
    assert anonymous.json() == wrong.json() == {"status": "degraded", "reasons": ["no_model"]}
    assert {"routes", "refused", "routing_version", "champion"} <= set(full.json())
    assert public_metrics.status_code == 401
    assert "loopline_serving_ready 0.0" in token_metrics.text
    assert scraped.status_code == 200
    assert "loopline_serving_ready 0.0" in scraped.text
    assert "loopline_serving_routing_version 0.0" in scraped.text
