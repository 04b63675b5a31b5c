"""The alert rules, the runbook and the dashboard hang together with what workers export.

promtool (Debian's ``prometheus`` package; ``scripts/setup test`` puts it in .venv/bin)
checks the rules, the Prometheus config, the alerts' unit tests and the dashboard's
queries. Without it those tests skip; the checks in Python below run everywhere.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import redis
import typer.main
import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric
from redis.backoff import NoBackoff
from redis.retry import Retry

from loopline.cli import app
from loopline.devstack import free_port
from loopline.routing import RoutingStore
from loopline.settings import Settings
from pusher.metrics import PusherMetrics
from serving.metrics import ServingMetrics
from trainer.exporter import Exporter

ROOT = Path(__file__).parents[2]
PROMETHEUS = ROOT / "ops" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
RUNBOOK = ROOT / "ops" / "RUNBOOK.md"
DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "loopline.json"
DATASOURCES = ROOT / "ops" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

RULES: list[dict[str, Any]] = [
    rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
]
PANELS: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
WANTED = {
    "LooplineWorkerDown",
    "LooplineModelStale",
    "LooplineTrainingStalled",
    "LooplineConsumerLag",
    "LooplineDeadletterRate",
    "LooplineDataHealthBreach",
    "LooplineFeatureSkew",
    "LooplineServingLatencySLO",
    "LooplineFallbackRate",
    "LooplineRampStuck",
    "LooplineControlCommandRefused",
}
#: Series that come from Prometheus itself or from the kafka-exporter in docker-compose.yml.
EXTERNAL = {"up", "ALERTS", "kafka_consumergroup_lag"}
METRIC = re.compile(r"\b(loopline_[a-z0-9_]+|kafka_[a-z0-9_]+)\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def _sample_names(families: Iterable[Metric]) -> set[str]:
    names = set()
    for family in families:
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


@pytest.fixture
def exported(unit_settings: Settings) -> set[str]:
    """Every series name a worker can export, from the workers' own collectors."""
    import streams.metrics  # noqa: F401  (registers the streams' metrics globally)

    nowhere = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    routing = RoutingStore(unit_settings, client=nowhere)
    registries = [
        REGISTRY,
        Exporter("m", CollectorRegistry()).registry,
        PusherMetrics(routing).registry,  # Redis unreachable: families without samples
        ServingMetrics().registry,
    ]
    names = set()
    for registry in registries:
        names |= _sample_names(registry.collect())
    return {n for n in names if n.startswith("loopline_")}


def _queries() -> Iterator[tuple[str, str]]:
    for rule in RULES:
        yield rule["alert"], rule["expr"]
    for panel in PANELS:
        for target in panel.get("targets", ()):
            yield f"panel {panel['title']!r}", target["expr"]


# -- the rules' shape ------------------------------------------------------------------


def test_every_wanted_alert_exists_once() -> None:
    names = [rule["alert"] for rule in RULES]
    assert len(names) == len(set(names))
    assert set(names) >= WANTED


@pytest.mark.parametrize("rule", RULES, ids=[r["alert"] for r in RULES])
def test_each_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
    assert rule["alert"].startswith("Loopline")
    assert isinstance(rule["expr"], str) and rule["expr"].strip()
    if "for" in rule:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
    assert rule["labels"]["severity"] in {"page", "ticket"}
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook"}
    assert annotations["runbook"] == f"ops/RUNBOOK.md#{rule['alert'].lower()}"


def test_every_alert_has_a_runbook_section_that_names_a_command() -> None:
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", RUNBOOK.read_text(), re.S | re.M))
    assert set(sections) == {rule["alert"] for rule in RULES}
    for alert, text in sections.items():
        assert "**Means:**" in text and "**Confirm" in text and "**Answer" in text, alert
        assert re.search(r"`loopline [a-z]", text), f"{alert} names no loopline command"


def test_every_command_the_runbook_names_exists_with_its_options() -> None:
    root: Any = typer.main.get_command(app)
    ctx = click.Context(root)
    spans = re.findall(r"`loopline ([^`]+)`", RUNBOOK.read_text())
    assert len(spans) > 20
    for span in spans:
        words = shlex.split(span)
        command = root
        while words and hasattr(command, "get_command"):
            sub = command.get_command(ctx, words[0])
            assert sub is not None, f"`loopline {span}`: no command {words[0]!r}"
            command, words = sub, words[1:]
        assert not hasattr(command, "get_command"), f"`loopline {span}` names a group"
        options = {o for param in command.params for o in param.opts}
        for word in words:
            if word.startswith("--"):
                assert word in options, f"`loopline {span}`: no option {word}"


def test_runbook_links_point_at_sections() -> None:
    text = RUNBOOK.read_text()
    anchors = {h.lower() for h in re.findall(r"^## (\S+)$", text, re.M)}
    assert set(re.findall(r"\]\(#([a-z0-9-]+)\)", text)) <= anchors


# -- metrics behind the queries ------------------------------------------------------


def test_every_metric_an_alert_or_panel_reads_is_exported(exported: set[str]) -> None:
    assert len(exported) > 30
    missing = {
        (where, name)
        for where, expr in _queries()
        for name in METRIC.findall(expr)
        if name not in exported and name not in EXTERNAL
    }
    assert not missing


def test_external_series_have_a_source_in_compose() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert "kafka-exporter" in compose["services"]
    assert "kafka-exporter" in {job["job_name"] for job in config["scrape_configs"]}


# -- the dashboard ---------------------------------------------------------------------


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    ids = [panel["id"] for panel in PANELS]
    assert len(ids) == len(set(ids))
    for panel in PANELS:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]


def test_dashboard_shows_each_part_of_the_loop() -> None:
    shown = " ".join(expr for where, expr in _queries() if where.startswith("panel"))
    for name in (
        "loopline_streams_records",  # throughput and deadletters
        "loopline_streams_health_window",
        "loopline_trainer_progressive_metric",
        "loopline_trainer_last_checkpoint_timestamp_seconds",
        "loopline_serving_model_created_timestamp_seconds",
        "loopline_serving_route_percent",
        "loopline_pusher_ramp_stage",
        "loopline_serving_request_seconds_bucket",
        "loopline_serving_fallbacks_total",
        "loopline_streams_served_skew",
        "kafka_consumergroup_lag",
    ):
        assert name in shown


# -- promtool --------------------------------------------------------------------------


def _promtool() -> str:
    found = shutil.which("promtool", path=str(Path(sys.executable).parent)) or shutil.which(
        "promtool"
    )
    if found is None:
        pytest.skip("promtool not found (scripts/setup test installs it where apt-get works)")
    return found


def _run(*args: str) -> str:
    done = subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_the_rules() -> None:
    assert f"SUCCESS: {len(RULES)} rules found" in _run("check", "rules", str(ALERTS))


def test_promtool_checks_the_config_and_the_rules_it_loads() -> None:
    out = _run("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert "SUCCESS: 1 rule files found" in out


def test_promtool_unit_tests_fire_each_alert() -> None:
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yml").read_text()))
    assert tested >= WANTED
    _run("test", "rules", str(PROMETHEUS / "alerts_test.yml"))


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    # As recording rules, Grafana's variables given plain values.
    rules = [
        {
            "record": f"dashboard:panel_{i}",
            "expr": expr.replace("$__rate_interval", "1m").replace("$model", ".*"),
        }
        for i, (where, expr) in enumerate(_queries())
        if where.startswith("panel")
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run("check", "rules", str(path))
