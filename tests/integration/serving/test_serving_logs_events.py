"""One call serves and logs: the example of a served event carries what serving used.

A real serving process and a real streams worker on the embedded broker and Redis:
the app calls ``/predict`` and later publishes only the label by the returned event
id; every example on ``examples`` carries exactly the features the model was asked
about (checked both against the logged event and by scoring the example again).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from feature_repo.online import OnlineFeatures
from loopline import accounting
from loopline.contracts import Event, Example, Features, Served
from loopline.devstack import free_port
from loopline.publisher import Publisher
from loopline.routing import RoutingStore, serve_only
from loopline.scoring import score
from loopline.settings import Settings
from loopline.validation import FeatureValidator
from tests.integration.serving.serving_support import (
    ROOT,
    record_qualified,
    serving,
    serving_process,
    store_of,
    wait_for,
)
from tests.integration.streams.streams_support import spec_variant, worker
from tests.kafka_support import read_topic
from tests.unit.pusher.pusher_support import examples, save, train

REQUESTS: list[Features] = [
    {"price": 20.0, "category": "alpaca", "hour": 9, "device": "mobile"},
    {"price": 8.5, "category": "wool", "hour": 21, "device": "desktop", "discount": True},
    {"price": 55.0, "hour": 13, "device": "mobile", "recent_views": 4},
]
ENTITIES = ("shopper-1", "shopper-2")


def route_all(settings: Settings, checkpoint_id: str) -> int:
    store = RoutingStore(settings)
    try:
        record_qualified(settings, store, checkpoint_id)
        return store.update(
            lambda t, _: (serve_only(t, checkpoint_id, "test"), None), "test"
        ).version
    finally:
        store.close()


def test_an_example_of_a_served_event_carries_exactly_what_serving_used(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.replace(spec=spec_variant(tmp_path), serving_port=free_port())
    spec = settings.load_spec()
    model = train(spec, examples(2000, seed=3))
    save(store_of(settings), spec, "ck-served", model)
    version = route_all(settings, "ck-served")
    online = OnlineFeatures(settings, spec)
    answers: dict[str, tuple[str, Features, float]] = {}  # event_id: entity, request, score
    with (
        worker(settings),
        serving_process(settings, tmp_path / "serving.log"),
        httpx.Client(base_url=f"http://127.0.0.1:{settings.serving_port}", timeout=5) as client,
        Publisher(settings, spec=spec) as pub,
    ):

        def follows() -> bool:
            try:
                return bool(client.get("/healthz").json()["routing_version"] >= version)
            except httpx.HTTPError:
                return False

        wait_for(follows, "serving to start and follow the routing table", timeout=60)
        for n, request in enumerate(REQUESTS, start=1):
            for i, entity in enumerate(ENTITIES):
                reply = client.post("/predict", json={"entity_id": entity, "features": request})
                assert reply.status_code == 200, reply.text
                answer = reply.json()
                assert answer["fallback"] is False and answer["model_version"] == "ck-served"
                answers[answer["event_id"]] = (entity, request, answer["score"])
                pub.label(answer["event_id"], entity, (n + i) % 2)  # the app's one other call
            pub.flush()
            # Before the next request, the streams have learned this one and its label:
            # serving then reads what the streams hold, not a new entity's Nones.
            wait_for(
                lambda k=n: learned(settings, online, k),  # type: ignore[misc]
                f"the streams to learn request {n} of each entity and its label",
                timeout=60,
            )
        total = len(answers)
        logged = {
            e.event_id: e
            for m in read_topic(settings, "events", total, 30)
            if (e := Event.from_json(m.value() or b"")).served is not None
        }
        built = [
            Example.from_json(m.value() or b"") for m in read_topic(settings, "examples", total, 60)
        ]
    online.close()

    assert set(logged) == set(answers) and {e.source for e in logged.values()} == {"serving"}
    assert sorted(ex.event_id for ex in built) == sorted(answers)
    validator = FeatureValidator(spec)
    for example in built:
        entity, request, served_score = answers[example.event_id]
        event = logged[example.event_id]
        assert event.served is not None and event.served.versions == ("ck-served",)
        assert event.served.entity is not None and event.features == request
        used, _ = validator.validate(request, impute=True)
        assert example.features == used | event.served.entity  # 100% what serving read
        # The model asked about these features gave the answer serving returned.
        assert score(model, example.features, "binary") == pytest.approx(served_score)
    later = [ex for ex in built if ex.features["impressions_1h"]]
    assert len(later) == total - len(ENTITIES)  # every request after an entity's first
    books = wait_for_books(settings, total)
    assert books.get("examples_served") == total and books.get("examples_recomputed") == 0
    assert books.get("served_compared") == total and books.get("served_skewed") == 0


def learned(settings: Settings, online: OnlineFeatures, requests: int) -> bool:
    joined = accounting.read(settings).get("labels_joined") >= requests * len(ENTITIES)
    rows = online.read(list(ENTITIES))
    return joined and all(
        r["impressions_1h"] == requests and r["click_rate_24h"] is not None for r in rows
    )


def wait_for_books(settings: Settings, examples_served: int) -> accounting.Accounting:
    def ready() -> accounting.Accounting | None:
        books = accounting.read(settings)
        return books if books.get("examples_served") >= examples_served else None

    return wait_for(ready, "the books to count the served examples", timeout=30)


def test_a_fallback_answer_logs_its_event_without_online_values_and_a_probe_logs_none(
    settings: Settings,
) -> None:
    spec = settings.load_spec()
    with serving(settings, spec) as (url, _), httpx.Client(base_url=url, timeout=5) as client:
        body = {"entity_id": "u1", "features": REQUESTS[0]}
        answer = client.post("/predict", json=body | {"event_id": "ev-1"}).json()
        probe = client.post("/predict", json=body | {"log": False}).json()
        retry = client.post("/predict", json=body | {"event_id": "ev-1"}).json()
    assert answer["fallback"] is True and answer["fallback_reason"] == "no_model"
    assert probe["event_id"] != "ev-1" and retry["event_id"] == "ev-1"
    logged = [Event.from_json(m.value() or b"") for m in read_topic(settings, "events", 2, 30)]
    # The retry logs the same event again: the streams keep the first, as any duplicate.
    assert [e.event_id for e in logged] == ["ev-1", "ev-1"]
    assert logged[0].served == Served(None, None, ("fallback",))
    assert logged[0].features == REQUESTS[0] and logged[0].entity_id == "u1"


def readme_app_flow() -> str:
    """The README's app-flow example, as a reader copies it."""
    text = (ROOT / "README.md").read_text()
    _, _, after = text.partition("<!-- app-flow -->\n```python\n")
    code, fence, _ = after.partition("```")
    assert fence, "README.md has no app-flow example"
    return code


def test_the_readme_app_flow_runs_and_its_example_carries_what_serving_read(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings.replace(spec=spec_variant(tmp_path), serving_port=free_port())
    spec = settings.load_spec()
    save(store_of(settings), spec, "ck-readme", train(spec, examples(500, seed=4)))
    version = route_all(settings, "ck-readme")
    for name, value in settings.process_env().items():
        if name.startswith("LOOPLINE_"):
            monkeypatch.setenv(name, value)
    with (
        worker(settings),
        serving_process(settings, tmp_path / "serving.log"),
        httpx.Client(base_url=f"http://127.0.0.1:{settings.serving_port}", timeout=5) as client,
    ):

        def follows() -> bool:
            try:
                return bool(client.get("/healthz").json()["routing_version"] >= version)
            except httpx.HTTPError:
                return False

        wait_for(follows, "serving to start and follow the routing table", timeout=60)
        exec(compile(readme_app_flow(), "README.md", "exec"), {})
        (built,) = [
            Example.from_json(m.value() or b"") for m in read_topic(settings, "examples", 1)
        ]
        books = wait_for_books(settings, 1)
    assert "from ck-readme" in capsys.readouterr().out
    assert built.entity_id == "user-42" and built.label == 1.0
    assert books.get("examples_served") == 1 and books.get("examples_recomputed") == 0


def test_a_broker_that_does_not_answer_costs_answers_nothing_and_is_counted(
    settings: Settings,
) -> None:
    away = settings.replace(kafka_bootstrap=f"127.0.0.1:{free_port()}", publish_timeout_seconds=1)
    spec = away.load_spec()
    with serving(away, spec) as (url, _), httpx.Client(base_url=url, timeout=5) as client:
        replies = [
            client.post("/predict", json={"entity_id": f"u{i}", "features": REQUESTS[1]})
            for i in range(3)
        ]

        def failures() -> dict[str, float] | None:
            counted = {
                s.labels["topic"]: s.value
                for family in text_string_to_metric_families(client.get("/metrics").text)
                for s in family.samples
                if s.name == "loopline_serving_delivery_failures_total"
            }
            return counted if counted.get(away.topic("events"), 0) >= 3 else None

        counted = wait_for(failures, "the lost events to be counted", timeout=30)
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert counted[away.topic("predictions")] >= 3
