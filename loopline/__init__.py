"""Loopline: continuous training from Kafka to serving.

The shared kernel: settings, wire contracts, the use-case spec and the Publisher SDK.
"""

from __future__ import annotations

from loopline.contracts import (
    CheckpointManifest,
    Command,
    CommandKind,
    Event,
    Example,
    Label,
    Prediction,
    Served,
)
from loopline.errors import LooplineError, Reason, RecordError, SpecError
from loopline.publisher import Publisher
from loopline.settings import Settings
from loopline.spec import Spec, load_spec

__all__ = [
    "CheckpointManifest",
    "Command",
    "CommandKind",
    "Event",
    "Example",
    "Label",
    "LooplineError",
    "Prediction",
    "Publisher",
    "Reason",
    "RecordError",
    "Served",
    "Settings",
    "Spec",
    "SpecError",
    "load_spec",
]
