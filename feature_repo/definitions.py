"""Feast objects derived from the use-case spec: the one place entity features are declared.

The entity is the spec's ``entity.name`` joined on ``<entity>_id``; one feature view,
``<entity>_features``, holds every ``entity.features`` entry and is fed by a push source.
Keys in the online store expire after the longest feature window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64, PrimitiveFeastType

from loopline.spec import EntityFeature, Spec

REPO_DIR = Path(__file__).parent
DEFAULT_PROJECT = "loopline"


def project_name(topic_prefix: str) -> str:
    """The Feast project of a deployment: its topic prefix, made a valid Feast name."""
    name = re.sub(r"\W+", "_", topic_prefix).strip("_")
    return name or DEFAULT_PROJECT


def view_name(spec: Spec) -> str:
    return f"{spec.entity.name}_features"


def join_key(spec: Spec) -> str:
    return f"{spec.entity.name}_id"


def ttl_seconds(spec: Spec) -> int:
    """How long an entity's features live without an update: its longest window."""
    return max((f.window_seconds for f in spec.entity.features.values()), default=86400)


def feast_type(feature: EntityFeature) -> PrimitiveFeastType:
    return Int64 if feature.kind == "count" else Float64


@dataclass(frozen=True)
class Definitions:
    entity: Entity
    push_source: PushSource
    view: FeatureView


def build(spec: Spec) -> Definitions:
    """The entity, push source and feature view for one spec."""
    entity = Entity(
        name=spec.entity.name,
        join_keys=[join_key(spec)],
        value_type=ValueType.STRING,
        description=spec.entity.description,
    )
    batch = FileSource(
        name=f"{view_name(spec)}_batch",
        path=str(REPO_DIR / "data" / f"{view_name(spec)}.parquet"),
        timestamp_field="event_timestamp",
    )
    push = PushSource(name=f"{view_name(spec)}_push", batch_source=batch)
    view = FeatureView(
        name=view_name(spec),
        entities=[entity],
        ttl=timedelta(seconds=ttl_seconds(spec)),
        schema=[
            Field(name=name, dtype=feast_type(f), description=f.description)
            for name, f in spec.entity.features.items()
        ],
        source=push,
        online=True,
        description=f"Per-{spec.entity.name} features computed by the streams from {spec.name}.",
    )
    return Definitions(entity, push, view)
