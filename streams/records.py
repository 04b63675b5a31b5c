"""Decoding what arrives on ``events`` and ``labels``: a clean record, or a reason why not.

Everything the Publisher checks is checked again here (apps may publish without the
SDK), plus what only the stream can see: the record's key must be its entity, so a
label lands on its event's partition.
"""

from __future__ import annotations

import math
from datetime import datetime

from loopline.contracts import Event, Features, Label
from loopline.errors import Reason, RecordError
from loopline.spec import Spec
from loopline.validation import FeatureValidator


class RecordDecoder:
    """Turns raw bytes into validated events and labels, raising RecordError otherwise."""

    def __init__(self, spec: Spec) -> None:
        self._validator = FeatureValidator(spec)
        self._max_bytes = spec.validation.max_record_bytes
        self._binary = spec.label.kind == "binary"
        self._entity_features = frozenset(spec.entity.features)

    def event(
        self, key: bytes | None, raw: bytes | None, now: datetime
    ) -> tuple[Event, Features, tuple[str, ...]]:
        """The event, its validated features with imputations applied, and the imputed names."""
        event = Event.from_json(raw or b"", self._max_bytes)
        _check_key(key, event.entity_id)
        self._validator.check_time(event.ts, now)
        features, imputed = self._validator.validate(event.features, impute=True)
        served = event.served.entity if event.served is not None else None
        if served is not None:
            unknown = sorted(set(served) - self._entity_features)
            if unknown:
                raise RecordError(
                    Reason.UNKNOWN_FEATURE,
                    f"served entity features {unknown} are not in the spec's entity.features",
                )
        return event, features, imputed

    def label(self, key: bytes | None, raw: bytes | None, now: datetime) -> Label:
        label = Label.from_json(raw or b"", self._max_bytes)
        _check_key(key, label.entity_id)
        self._validator.check_time(label.ts, now)
        if not math.isfinite(label.label) or (self._binary and label.label not in (0.0, 1.0)):
            raise RecordError(Reason.OUT_OF_RANGE, f"label {label.label!r} is not 0 or 1")
        return label


def _check_key(key: bytes | None, entity_id: str) -> None:
    if key is None or key != entity_id.encode():
        raise RecordError(
            Reason.KEY_MISMATCH,
            f"record key {key!r} is not its entity_id {entity_id!r} (publish keyed by entity)",
        )
