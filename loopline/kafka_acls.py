"""Who may do what on the broker: the Kafka ACLs of every Loopline principal.

Each role logs in as its own principal, ``User:<role>`` (``LOOPLINE_KAFKA_USERNAME``),
and is allowed only what its code does; a broker with an authorizer and
``allow.everyone.if.no.acl.found=false`` refuses the rest. Only the operator and the
streams workers (the data-health monitor's automatic pause) may write ``control``.

====================  ==========================================================
principal             allowed
====================  ==========================================================
``operator``          write ``control``; read every topic; describe every group
``streams``           read ``events``, ``labels``; write ``examples``,
                      ``deadletter``, ``control``; own ``<prefix>streams-*`` topics
                      (faust's changelog) and its ``<prefix>streams*`` groups
``trainer``           read ``examples``, ``control``; write ``checkpoints``;
                      groups ``<prefix>trainer.*``
``pusher``            read ``checkpoints``, ``examples``, ``predictions``,
                      ``control``; groups ``<prefix>pusher*``
``serving``           write ``predictions``, ``events`` (the events it scored)
``publisher``         write ``events``, ``labels`` (apps, backfills)
``exporter``          describe topics, groups and the cluster (consumer lag)
====================  ==========================================================

The broker's own principal (``admin`` in compose) is a super user: it creates the
topics and these ACLs (``loopline kafka acls --apply``) and needs no grant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from loopline.errors import BrokerUnavailable
from loopline.settings import Settings

Role = Literal["operator", "streams", "trainer", "pusher", "serving", "publisher", "exporter"]
ROLES: tuple[Role, ...] = (
    "operator",
    "streams",
    "trainer",
    "pusher",
    "serving",
    "publisher",
    "exporter",
)
Resource = Literal["topic", "group", "cluster"]
Pattern = Literal["literal", "prefixed"]

#: topics each role reads and writes (names without the prefix)
READS: dict[Role, tuple[str, ...]] = {
    "operator": (),  # every topic, by prefix
    "streams": ("events", "labels", "examples", "deadletter"),  # outputs read back
    "trainer": ("examples", "control"),
    "pusher": ("checkpoints", "examples", "predictions", "control"),
    "serving": (),
    "publisher": (),
    "exporter": (),
}
WRITES: dict[Role, tuple[str, ...]] = {
    "operator": ("control",),
    "streams": ("examples", "deadletter", "control"),
    "trainer": ("checkpoints",),
    "pusher": (),
    "serving": ("predictions", "events"),
    "publisher": ("events", "labels"),
    "exporter": (),
}
#: the consumer-group prefix of each role (after the topic prefix); the operator reads
#: through ``inspect`` and the trainer's control log does too
GROUPS: dict[Role, tuple[tuple[str, Pattern], ...]] = {
    "operator": (("inspect", "literal"),),
    "streams": (("streams", "prefixed"),),
    "trainer": (("trainer.", "prefixed"), ("inspect", "literal")),
    "pusher": (("pusher", "prefixed"),),
    "serving": (),
    "publisher": (),
    "exporter": (),
}


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """``principal`` may do ``operation`` on the resources ``name`` matches."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: str  # READ, WRITE, DESCRIBE, CREATE, ALL, ...

    def binding(self) -> AclBinding:
        # librdkafka's BROKER resource type is Kafka's CLUSTER (type 4, name kafka-cluster).
        kind = (
            ResourceType.BROKER
            if self.resource == "cluster"
            else ResourceType[self.resource.upper()]
        )
        return AclBinding(
            kind,
            self.name,
            ResourcePatternType[self.pattern.upper()],
            self.principal,
            "*",
            AclOperation[self.operation],
            AclPermissionType.ALLOW,
        )


def principal(role: Role) -> str:
    return f"User:{role}"


def grants(settings: Settings) -> list[Grant]:
    """Every ACL of every role, for this deployment's topic prefix.

    >>> writers = {g.principal for g in grants(Settings()) if g.name == "loopline.control"
    ...            and g.operation == "WRITE"}
    >>> sorted(writers)
    ['User:operator', 'User:streams']
    """
    prefix = settings.topic_prefix
    found: list[Grant] = []
    for role in ROLES:
        who = principal(role)
        found += [Grant(who, "topic", settings.topic(t), "literal", "READ") for t in READS[role]]
        found += [Grant(who, "topic", settings.topic(t), "literal", "WRITE") for t in WRITES[role]]
        if WRITES[role]:  # idempotent producers (implied by WRITE since Kafka 3.0)
            found.append(Grant(who, "cluster", "kafka-cluster", "literal", "IDEMPOTENT_WRITE"))
        for group, pattern in GROUPS[role]:
            found.append(Grant(who, "group", prefix + group, pattern, "READ"))
    found += [
        Grant(principal("operator"), "topic", prefix, "prefixed", "READ"),
        Grant(principal("operator"), "topic", prefix, "prefixed", "DESCRIBE_CONFIGS"),
        Grant(principal("operator"), "group", prefix, "prefixed", "DESCRIBE"),
        # faust creates and owns its changelog and assignor topics.
        Grant(principal("streams"), "topic", f"{prefix}streams-", "prefixed", "ALL"),
        Grant(principal("exporter"), "topic", prefix, "prefixed", "DESCRIBE"),
        Grant(principal("exporter"), "group", prefix, "prefixed", "DESCRIBE"),
        Grant(principal("exporter"), "cluster", "kafka-cluster", "literal", "DESCRIBE"),
    ]
    return sorted(set(found))


def allowed(
    found: Iterable[Grant], who: str, resource: Resource, name: str, operation: str
) -> bool:
    """Whether ``found`` lets ``who`` do ``operation`` on one resource, as Kafka's
    authorizer decides it (READ and WRITE imply DESCRIBE; ALL implies everything).

    >>> allowed(grants(Settings()), "User:trainer", "topic", "loopline.control", "WRITE")
    False
    """
    implied = {operation, "ALL"} | ({"READ", "WRITE"} if operation == "DESCRIBE" else set())
    for g in found:
        if g.principal != who or g.resource != resource or g.operation not in implied:
            continue
        if name == g.name if g.pattern == "literal" else name.startswith(g.name):
            return True
    return False


def apply(settings: Settings, timeout: float = 15.0) -> int:
    """Create every grant on the broker (creating one that exists changes nothing);
    returns how many. Needs a principal allowed to alter ACLs (a super user)."""
    from loopline.kafka import admin

    bindings = [g.binding() for g in grants(settings)]
    client = admin(settings)  # held until every future is done: a dropped client fails them
    try:
        futures = client.create_acls(bindings, request_timeout=timeout)
        for future in futures.values():
            future.result(timeout=timeout)
    except (KafkaException, TimeoutError) as exc:
        raise BrokerUnavailable(
            f"cannot create the ACLs on {settings.kafka_bootstrap} as "
            f"{settings.kafka_username or 'an unauthenticated client'}: {exc}"
        ) from None
    return len(bindings)
