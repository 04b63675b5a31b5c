from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.publisher import Publisher
from loopline.routing import RampState, RampStatus, RoutingStore
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, Guardrail, Qualification, Ramp, Spec, load_spec
from tests.integration.serving.serving_support import (
    announce,
    publish_examples,
    pusher,
    serving,
    store_of,
    wait_for,
)
from tests.unit.pusher.pusher_support import examples, request_features, save, train

TRAINING = examples(4000, seed=2)


def spec_with(ramp: Ramp) -> Spec:
    """The shipped spec with a short ramp and a wide metric tolerance (models here are small)."""
    spec = load_spec(DEFAULT_SPEC)
    qualification = Qualification(**spec.qualification.model_dump() | {"tolerance": 0.1})
    return spec.model_copy(update={"ramp": ramp, "qualification": qualification})


def champion_and_holdout(settings: Settings, spec: Spec) -> Any:
    """Checkpoint ck-a (lineage a) announced, holdout published; returns its model."""
    model = train(spec, TRAINING[:1500])
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    announce(
        settings, save(store_of(settings), spec, "ck-a", model, lineage="a", created_at=earlier)
    )
    publish_examples(settings, examples(spec.qualification.min_holdout, seed=5, holdout=0.1))
    return model


def champion(client: httpx.Client, checkpoint_id: str) -> bool:
    health = client.get("/healthz").json()
    return bool(health["routes"] == {checkpoint_id: 100.0})


class Load(threading.Thread):
    """Steady traffic on /predict from one client; remembers every outcome."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.versions: list[str] = []
        self.failures: list[str] = []

    def run(self) -> None:
        rng = random.Random(7)
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while not self.stop.is_set():
                body = {
                    "entity_id": f"user-{rng.randrange(1000)}",
                    "features": request_features(rng),
                }
                try:
                    reply = client.post("/predict", json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if reply.status_code != 200 or reply.json()["fallback"]:
                    self.failures.append(reply.text)
                else:
                    self.versions.append(reply.json()["model_version"])


def test_a_fresh_checkpoint_is_hot_swapped_under_load(settings: Settings) -> None:
    spec = spec_with(Ramp())
    model = champion_and_holdout(settings, spec)
    with (
        pusher(settings, spec),
        serving(settings, spec) as (url, _),
        httpx.Client(base_url=url, timeout=5) as client,
    ):
        wait_for(lambda: champion(client, "ck-a"), "ck-a to serve")
        load = Load(url)
        load.start()
        wait_for(lambda: len(load.versions) > 200, "traffic on ck-a")
        fresher = train(spec, TRAINING[1500:], model)
        announce(settings, save(store_of(settings), spec, "ck-a2", fresher, lineage="a"))
        wait_for(lambda: "ck-a2" in load.versions, "ck-a2 to answer")
        seen = len(load.versions)
        wait_for(lambda: len(load.versions) > seen + 200, "more traffic on ck-a2")
        load.stop.set()
        load.join(10)
    assert load.failures == []
    assert load.versions[0] == "ck-a"
    assert set(load.versions[-200:]) == {"ck-a2"}
    store = RoutingStore(settings)
    try:
        assert store.served() == {"ck-a", "ck-a2"}
        assert store.verdict("ck-a2")["action"].startswith("champion: fresher than ck-a")  # type: ignore[index]
    finally:
        store.close()


ENTITIES = [f"user-{i}" for i in range(3000)]


def test_a_new_model_ramps_to_100_percent_in_its_stages(settings: Settings) -> None:
    spec = spec_with(Ramp(stages=(1, 5, 25, 50, 100), dwell_seconds=1.0))
    champion_and_holdout(settings, spec)
    runner = CliRunner()
    env = settings.to_env()
    routing = RoutingStore(settings)
    with (
        pusher(settings, spec),
        serving(settings, spec) as (url, _),
        httpx.Client(base_url=url, timeout=5) as client,
    ):
        wait_for(lambda: champion(client, "ck-a"), "ck-a to serve")
        other = spec.model_copy(
            update={"model": spec.model.model_copy(update={"params": {"lr": 0.02}})}
        )
        announce(
            settings,
            save(store_of(settings), spec, "ck-new", train(other, TRAINING), lineage="new"),
        )
        for stage, percent in enumerate(spec.ramp.stages):

            def at_stage(i: int = stage) -> bool:
                ramp = routing.ramp()
                return ramp is not None and ramp.stage == i and ramp.status is RampStatus.RAMPING

            wait_for(at_stage, f"stage {stage}")
            paused = runner.invoke(app, ["ramp", "pause", "--reason", "look closer"], env=env)
            assert paused.exit_code == 0, paused.output
            version = routing.table().version
            wait_for(
                lambda v=version: client.get("/healthz").json()["routing_version"] == v, "serving"
            )  # type: ignore[misc]
            versions = [
                client.post(
                    "/predict",
                    json={"entity_id": e, "features": request_features(random.Random(i))},
                ).json()
                for i, e in enumerate(ENTITIES)
            ]
            assert [v for v in versions if v["fallback"]] == []
            share = 100 * sum(v["model_version"] == "ck-new" for v in versions) / len(versions)
            assert share == pytest.approx(percent, abs=2), f"stage {stage}: {share:.2f}% on ck-new"
            resumed = runner.invoke(app, ["ramp", "resume", "--reason", "fine"], env=env)
            assert resumed.exit_code == 0, resumed.output

        def promoted() -> RampState | None:
            ramp = routing.ramp()
            return ramp if ramp is not None and ramp.status is RampStatus.PROMOTED else None

        ramp = wait_for(promoted, "ck-new to be promoted")
        assert routing.table().champion == "ck-new"
        wait_for(lambda: client.get("/healthz").json()["champion"] == "ck-new", "serving")
    routes = runner.invoke(app, ["routes"], env=env)
    routing.close()
    assert ramp.reason == "promoted after 5 stages"
    assert "ck-new" in routes.output and "promoted" in routes.output


def test_a_degraded_model_is_rolled_back_by_its_guardrail(settings: Settings) -> None:
    guard = Guardrail(metric="log_loss", max_degradation=0.05, min_samples=40)
    spec = spec_with(Ramp(stages=(50, 100), dwell_seconds=600, guardrails=(guard,)))
    champion_and_holdout(settings, spec)
    routing = RoutingStore(settings)
    with (
        pusher(settings, spec),
        serving(settings, spec) as (url, _),
        httpx.Client(base_url=url, timeout=5) as client,
        Publisher(settings, spec=spec) as publisher,
    ):
        wait_for(lambda: champion(client, "ck-a"), "ck-a to serve")
        other = spec.model_copy(
            update={"model": spec.model.model_copy(update={"params": {"lr": 0.02}})}
        )
        announce(
            settings, save(store_of(settings), spec, "ck-c", train(other, TRAINING), lineage="c")
        )
        wait_for(lambda: len(client.get("/healthz").json()["routes"]) == 2, "the ramp at 50%")
        rng = random.Random(3)
        for i in range(300):
            entity = f"user-{i}"
            answer = client.post(
                "/predict", json={"entity_id": entity, "features": request_features(rng)}
            ).json()
            likely = answer["score"] >= 0.5
            # The world agrees with the baseline and contradicts the candidate.
            outcome = likely if answer["model_version"] == "ck-a" else not likely
            publisher.label(answer["event_id"], entity, outcome)
        publisher.flush()
        ramp = wait_for(
            lambda: (r := routing.ramp()) is not None and r.status is RampStatus.ROLLED_BACK and r,
            "the rollback",
        )
        wait_for(lambda: champion(client, "ck-a"), "ck-a to serve everyone again")
    table = routing.table()
    routing.close()
    assert ramp.reason.startswith("guardrail: log_loss")
    assert table.champion == "ck-a" and "rolled back ck-c" in table.reason
