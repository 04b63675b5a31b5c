"""Serving Commands on ``control`` (rollback, pin, ramp pause/resume/abort, kill switch).

The pusher reads ``control`` in a consumer group of its own and applies each serving
Command for its model through :mod:`loopline.routing_actions`, the same code the CLI
runs. A Command's change and the record that it was applied are one Redis
transaction, and the offset is committed only after it: a Redis failure midway
leaves the Command unapplied and uncommitted, so it is read and applied again once
Redis answers; one applied already (by the CLI, or before a crash) is skipped.

Which Commands are new is judged by the log position, never by a clock: the group
resumes from its committed offsets, so a Command sent while the pusher was down is
applied when it comes back. A group with no committed offset (a first start, or
offsets the broker expired) starts at the end of the log and commits that position at
once, so it never replays last week's rollback over what happened since.

The follower also keeps the model's :class:`~loopline.control_state.ControlState` (the
windows marked anomalous, which qualification leaves out): :meth:`ControlFollower.catch_up`
folds the whole log on start, and every Command read after is folded in too. Folding
again a suffix of the log already folded (the group's uncommitted tail) ends in the same
state.

When operator keys are configured (``LOOPLINE_OPERATOR_KEYS``; outside development
mode the pusher does not start without them), a Command whose signature does not
prove its ``issued_by`` is not applied: it is logged with why and counted
(``loopline_pusher_control_refused``), and its offset committed like any other.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter

from loopline import routing_actions
from loopline.contracts import Command
from loopline.control import admit, applies_to, read_log
from loopline.control_state import ControlState
from loopline.errors import LooplineError, RecordError
from loopline.kafka import consumer_config
from loopline.routing import AlreadyApplied, RoutingContention, RoutingStore
from loopline.settings import Settings
from loopline.signing.commands import operator_keys

log = logging.getLogger(__name__)


class ControlFollower:
    #: Counts records on control that hold no Command (the pusher sets its metric here).
    unreadable: Counter | None = None
    #: Counts Commands refused for their signature (the pusher sets its metric here).
    refused: Counter | None = None

    def __init__(self, settings: Settings, model_name: str, store: RoutingStore) -> None:
        self.settings = settings
        self.model_name = model_name
        self.store = store
        self.applied: list[str] = []
        self.state = ControlState(model_name)
        self.keys = operator_keys(settings)
        #: Set once the consumer holds its partitions at known positions.
        self.ready = threading.Event()
        self.closing = False  # set before its consumer closes

    def catch_up(self, timeout: float = 15.0) -> None:
        """Fold every Command on the log so far into :attr:`state`."""
        self.state = ControlState.fold(read_log(self.settings, timeout).commands, self.model_name)

    def consumer(self) -> Consumer:
        s = self.settings
        consumer = Consumer(consumer_config(s, f"{s.topic_prefix}pusher-control"))
        consumer.subscribe([s.topic("control")], on_assign=self._on_assign)
        return consumer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            positions = consumer.committed(partitions, timeout=10)
            fresh = [p for p in positions if p.offset < 0]
            for p in fresh:
                _, p.offset = consumer.get_watermark_offsets(p, timeout=10)
            if fresh:
                consumer.commit(offsets=fresh, asynchronous=False)
                log.info("control: no committed position; following from the end of the log")
        except KafkaException as exc:
            # An assignment that lands while the consumer closes (a stop right after
            # the start) has nothing to position, and no answer to wait for.
            if self.closing or exc.args[0].code() == KafkaError._DESTROY:
                return
            raise
        consumer.assign(positions)
        self.ready.set()

    def handle(self, msg: Message) -> None:
        """Apply one record's Command if it is ours and new; Redis errors propagate
        (the caller must not commit the offset then)."""
        try:
            command = Command.from_json(msg.value() or b"")
        except RecordError as exc:
            log.error("unreadable command at offset %s: %s", msg.offset(), exc)
            if self.unreadable is not None:
                self.unreadable.inc()
            return
        if not applies_to(command, self.model_name):
            return
        if admit(self.keys, command) is not None:
            if self.refused is not None:
                self.refused.inc()
            return
        self.state.apply(command)
        if self.store.command_applied(command.command_id):
            return
        try:
            done = routing_actions.apply(self.settings, self.store, command)
        except AlreadyApplied:
            return
        except RoutingContention:
            raise  # not applied, not refused: read it again
        except LooplineError as exc:
            log.error("command %s (%s) not applied: %s", command.command_id, command.kind, exc)
            return
        if done is not None:
            log.warning("command %s from %s: %s", command.kind, command.issued_by, done)
            self.applied.append(done)
