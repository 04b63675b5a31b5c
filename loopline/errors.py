"""Loopline's exceptions.

One root, narrow subclasses; messages say what was wrong and what to do::

    LooplineError
    ├── ConfigError            settings or environment are wrong
    ├── SpecError              the use-case spec file is invalid (names file and key)
    ├── RecordError            one record is bad; carries a stable ``Reason`` code
    ├── PublishError           the Publisher could not hand records to Kafka
    │   └── BrokerUnavailable  the broker did not answer in time
    ├── CheckpointError        a checkpoint is missing, corrupt or not signed
    ├── LeaseError             a role only one process may hold at a time
    │   ├── LeaseHeld          another process holds it (names the holder)
    │   └── LeaseLost          it was ours, and another process took it over
    └── StackError             the local stack could not be started or reached
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a record was rejected; the codes on the deadletter topic."""

    MALFORMED_JSON = "malformed_json"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_FEATURE = "unknown_feature"
    CLOCK_SKEW = "clock_skew"
    TOO_OLD = "too_old"
    TOO_LARGE = "too_large"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    KEY_MISMATCH = "key_mismatch"
    UNKNOWN_EVENT = "unknown_event"
    EXPIRED_EVENT = "expired_event"


class LooplineError(Exception):
    """Root of every error Loopline raises on purpose."""


class ConfigError(LooplineError):
    """Settings or environment are wrong."""


class SpecError(LooplineError):
    """The use-case spec is invalid."""

    def __init__(self, path: object, key: str, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.path}: {key}: {problem}")


class RecordError(LooplineError):
    """A single record is bad. ``reason`` is the stable deadletter code."""

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")


class PublishError(LooplineError):
    """Records could not be handed to Kafka or were not acknowledged."""


class BrokerUnavailable(PublishError):
    """The broker did not answer within the configured time."""


class CheckpointError(LooplineError):
    """A checkpoint is missing, corrupt, unsigned or tampered with."""


class LeaseError(LooplineError):
    """A lease (one process at a time in a role) is not ours.

    ``holder`` is the :class:`loopline.lease.Holder` that has it, when known.
    """

    def __init__(self, message: str, holder: object | None = None) -> None:
        self.holder = holder
        super().__init__(message)


class LeaseHeld(LeaseError):
    """Another process holds the lease: do not start."""


class LeaseLost(LeaseError):
    """The lease was ours and is not any more: stop, make nothing durable."""


class StackError(LooplineError):
    """The local stack could not be started or reached."""
