"""The trainer's view of the control channel: everything so far on start, then new ones.

The follower starts at the watermarks taken before the full read, so nothing falls in
between; commands seen twice are dropped by ``command_id``. Records that hold no
Command are skipped and counted (``loopline_trainer_control_unreadable``); Commands
whose signature does not prove their issuer, when operator keys are configured, are
not applied, logged, counted (``loopline_trainer_control_refused``) and listed with
why in the heartbeat's ``refused_commands``.
"""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from loopline.contracts import Command
from loopline.control import Refused, admit, applies_to, decode, read_log
from loopline.errors import BrokerUnavailable
from loopline.kafka import consumer_config
from loopline.settings import Settings
from loopline.signing.commands import operator_keys


class ControlFeed:
    """Commands for one model, in order."""

    def __init__(
        self, settings: Settings, model_name: str, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.model_name = model_name
        self._seen: set[str] = set()
        self._keys = operator_keys(settings)
        self._refused: list[Refused] = []
        self._seen_refused: set[str] = set()
        registry = registry or CollectorRegistry()
        self.unreadable = Counter(
            "loopline_trainer_control_unreadable",
            "Records on control that hold no Command, skipped (counted again on each start).",
            ["model"],
            registry=registry,
        ).labels(model_name)
        self.refused = Counter(
            "loopline_trainer_control_refused",
            "Commands on control not applied: unsigned, or not signed by the operator key "
            "their issued_by names (counted again on each start).",
            ["model"],
            registry=registry,
        ).labels(model_name)
        self._consumer = Consumer(
            consumer_config(
                settings, group_id=f"{settings.topic_prefix}trainer.{model_name}.control"
            )
        )

    def catch_up(self, timeout: float = 10.0) -> list[Command]:
        """Every command on the topic so far that applies to this model."""
        topic = self.settings.topic("control")
        try:
            metadata = self._consumer.list_topics(topic, timeout=timeout).topics[topic]
            starts = []
            for p in metadata.partitions:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=timeout
                )
                starts.append(TopicPartition(topic, p, max(high - 1, 0)))
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"cannot read {topic} from {self.settings.kafka_bootstrap}: {exc}"
            ) from None
        control = read_log(self.settings, timeout, self._keys)
        self.unreadable.inc(control.unreadable)
        self._refuse(control.refused)
        self._consumer.assign(starts)
        return self._fresh(control.commands)

    def poll(self) -> list[Command]:
        """Commands that arrived since the last call (does not block)."""
        commands = []
        for msg in self._consumer.consume(100, 0):
            if msg.error() is not None:
                continue
            command = decode(msg.value(), f"{msg.partition()}/{msg.offset()}")
            if command is None:
                self.unreadable.inc()
            elif (refused := admit(self._keys, command)) is not None:
                self._refuse([refused])
            else:
                commands.append(command)
        return self._fresh(sorted(commands, key=lambda c: c.issued_at))

    def _refuse(self, refused: list[Refused]) -> None:
        # Refused ids are kept apart from the applied ones: a forgery must not shadow the
        # genuine Command of the same id.
        for r in refused:
            if r.command.command_id in self._seen_refused:
                continue
            self._seen_refused.add(r.command.command_id)
            if applies_to(r.command, self.model_name):
                self.refused.inc()
                self._refused.append(r)

    def take_refused(self) -> list[Refused]:
        """The Commands for this model refused since the last call."""
        taken, self._refused = self._refused, []
        return taken

    def _fresh(self, commands: list[Command]) -> list[Command]:
        fresh = []
        for command in commands:
            if command.command_id in self._seen:
                continue
            self._seen.add(command.command_id)
            if applies_to(command, self.model_name):
                fresh.append(command)
        return fresh

    def close(self) -> None:
        self._consumer.close()
