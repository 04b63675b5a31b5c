"""The ACLs of every principal match what each role's code reads, writes and joins."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.kafka_acls import ROLES, WRITES, allowed, grants, principal
from loopline.settings import TOPICS, Settings
from streams.topology import app_id

ROOT = Path(__file__).parents[2]
SETTINGS = Settings.from_env({"LOOPLINE_TOPIC_PREFIX": "shop."})
GRANTS = grants(SETTINGS)
#: who opens consumers in each folder (the kernel's ``inspect`` reads serve operators and
#: the trainer's control log)
OWNERS = {"streams": ("streams",), "trainer": ("trainer",), "pusher": ("pusher",)}
KERNEL_READERS = ("operator", "trainer")


def may(role: str, resource: str, name: str, operation: str) -> bool:
    return allowed(GRANTS, principal(role), resource, name, operation)  # type: ignore[arg-type]


def test_only_the_operator_and_streams_may_write_control() -> None:
    control = SETTINGS.topic("control")
    assert {r for r in ROLES if may(r, "topic", control, "WRITE")} == {"operator", "streams"}


def test_each_role_writes_only_its_own_topics() -> None:
    for role in ROLES:
        writes = {t for t in TOPICS if may(role, "topic", SETTINGS.topic(t), "WRITE")}
        assert writes == set(WRITES[role]), role
    assert {t for t in TOPICS if may("publisher", "topic", SETTINGS.topic(t), "WRITE")} == {
        "events",
        "labels",
    }
    assert not {t for t in TOPICS if may("serving", "topic", SETTINGS.topic(t), "READ")}
    assert {t for t in TOPICS if may("serving", "topic", SETTINGS.topic(t), "WRITE")} == {
        "predictions",
        "events",
    }


def test_the_operator_reads_everything_and_describes_every_group() -> None:
    for topic in TOPICS:
        assert may("operator", "topic", SETTINGS.topic(topic), "READ"), topic
    for group in (app_id(SETTINGS), "shop.trainer.yarn_shop", "shop.pusher"):
        assert may("operator", "group", group, "DESCRIBE"), group
        assert not may("operator", "group", group, "READ"), group  # lag, never a join


def test_the_exporter_only_describes() -> None:
    operations = {g.operation for g in GRANTS if g.principal == principal("exporter")}
    assert operations == {"DESCRIBE"}
    assert may("exporter", "group", app_id(SETTINGS), "DESCRIBE")


def test_streams_owns_its_faust_topics() -> None:
    for topic in (f"{app_id(SETTINGS)}-state-changelog", f"{app_id(SETTINGS)}-__assignor-__leader"):
        for operation in ("CREATE", "READ", "WRITE", "DESCRIBE"):
            assert may("streams", "topic", topic, operation), (topic, operation)
        assert not may("trainer", "topic", topic, "READ")


def test_the_grants_follow_the_topic_prefix() -> None:
    assert all(g.name.startswith("shop.") for g in GRANTS if g.resource != "cluster")
    other = grants(Settings.from_env({"LOOPLINE_TOPIC_PREFIX": "fraud."}))
    assert not {g.name for g in other} & {g.name for g in GRANTS if g.resource != "cluster"}


def test_every_grant_is_a_valid_acl_binding() -> None:
    for grant in GRANTS:
        binding = grant.binding()
        assert binding.name == grant.name and binding.principal == grant.principal
        assert binding.restype.name == (
            "BROKER" if grant.resource == "cluster" else grant.resource.upper()
        )
        assert binding.operation.name == grant.operation


def _group_names(path: Path) -> list[str]:
    """The consumer groups a module opens: each ``consumer_config`` group that is an
    f-string on the topic prefix, its placeholders filled with ``x``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "consumer_config"):
            continue
        group = next((k.value for k in node.keywords if k.arg == "group_id"), None)
        if group is None and len(node.args) > 1:
            group = node.args[1]
        if not isinstance(group, ast.JoinedStr):
            continue
        first, *rest = group.values
        assert isinstance(first, ast.FormattedValue) and "topic_prefix" in ast.unparse(first), (
            f"{path}: consumer group {ast.unparse(group)} is not under the topic prefix"
        )
        names.append(
            SETTINGS.topic_prefix
            + "".join(v.value if isinstance(v, ast.Constant) else "x" for v in rest)
        )
    return names


@pytest.mark.parametrize("folder", ["loopline", "streams", "trainer", "pusher"])
def test_every_consumer_group_in_the_code_is_allowed_to_its_owner(folder: str) -> None:
    found = 0
    for path in sorted((ROOT / folder).rglob("*.py")):
        for group in _group_names(path):
            found += 1
            for role in OWNERS.get(folder, KERNEL_READERS):
                assert may(role, "group", group, "READ"), (path.name, role, group)
    assert found, f"no consumer group found in {folder}/"
    # faust's group is the app id.
    assert may("streams", "group", app_id(SETTINGS), "READ")


def test_a_worker_may_not_join_another_workers_group() -> None:
    assert not may("trainer", "group", app_id(SETTINGS), "READ")
    assert not may("streams", "group", "shop.trainer.yarn_shop", "READ")
    assert not may("pusher", "group", "shop.trainer.yarn_shop", "READ")


def test_the_cli_lists_the_grants() -> None:
    result = CliRunner().invoke(app, ["kafka", "acls"], env=SETTINGS.to_env() | {"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "User:operator" in result.output and "shop.control" in result.output
