"""Serving Commands on ``control`` (rollback, pin, ramp pause/resume/abort, kill switch).

The pusher reads ``control`` in a consumer group of its own and applies each serving
Command for its model through :mod:`loopline.routing_actions`, the same code the CLI
runs. A Command is claimed in Redis before it is applied, so it applies at most once
even across a crash (a repeated ``rollback`` would roll back one step further).
Commands older than ``max_age`` are skipped: a fresh consumer group reading the topic
from the start must not replay last week's rollback over what happened since.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from confluent_kafka import Consumer, Message
from prometheus_client import Counter

from loopline import routing_actions
from loopline.contracts import Command, utcnow
from loopline.control import applies_to
from loopline.errors import LooplineError, RecordError
from loopline.kafka import consumer_config
from loopline.routing import RoutingStore
from loopline.settings import Settings

log = logging.getLogger(__name__)


class ControlFollower:
    #: Counts records on control that hold no Command (the pusher sets its metric here).
    unreadable: Counter | None = None

    def __init__(
        self,
        settings: Settings,
        model_name: str,
        store: RoutingStore,
        max_age: timedelta = timedelta(minutes=10),
    ) -> None:
        self.settings = settings
        self.model_name = model_name
        self.store = store
        self.max_age = max_age
        self.applied: list[str] = []

    def consumer(self) -> Consumer:
        s = self.settings
        consumer = Consumer(consumer_config(s, f"{s.topic_prefix}pusher-control"))
        consumer.subscribe([s.topic("control")])
        return consumer

    def handle(self, msg: Message) -> None:
        try:
            command = Command.from_json(msg.value() or b"")
        except RecordError as exc:
            log.error("unreadable command at offset %s: %s", msg.offset(), exc)
            if self.unreadable is not None:
                self.unreadable.inc()
            return
        if not applies_to(command, self.model_name):
            return
        if utcnow() - command.issued_at > self.max_age:
            log.info(
                "skipping command %s (%s): older than %s",
                command.command_id,
                command.kind,
                self.max_age,
            )
            return
        if not self.store.claim_command(command.command_id):
            return
        try:
            done = routing_actions.apply(self.settings, self.store, command)
        except LooplineError as exc:
            log.error("command %s (%s) not applied: %s", command.command_id, command.kind, exc)
            return
        if done is not None:
            log.warning("command %s from %s: %s", command.kind, command.issued_by, done)
            self.applied.append(done)
