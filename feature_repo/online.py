"""The online feature store: per-entity features in Feast's Redis layout.

Writes go through Feast's Redis online store (``online_write_batch``), which compares
each row's event time with the stored ``_ts`` and skips stale rows, and sets the key
TTL. Reads fetch the same hash fields with one pipelined ``HMGET`` per call: Feast's
``get_online_features`` costs milliseconds per call, too slow for serving's budget.

Each deployment is its own Feast project (from ``settings.topic_prefix``), so keys of
two deployments never meet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlparse

from feast import RepoConfig
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feature_repo.definitions import build, join_key, project_name, ttl_seconds, view_name
from loopline.contracts import FeatureValue
from loopline.redis_client import redis_client
from loopline.settings import Settings
from loopline.spec import Spec

Row = tuple[str, Mapping[str, FeatureValue], datetime]
KEY_VERSION = 3


def connection_string(redis_url: str) -> str:
    """Feast's ``host:port,db=N,...`` form of a ``redis://`` URL."""
    url = urlparse(redis_url)
    parts = [f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"]
    db = url.path.lstrip("/")
    parts.append(f"db={int(db) if db else 0}")
    if url.username:
        parts.append(f"username={unquote(url.username)}")
    if url.password:
        parts.append(f"password={unquote(url.password)}")
    if url.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def repo_config(settings: Settings, spec: Spec) -> RepoConfig:
    """The Feast configuration of a deployment (the repo's YAML, for these settings)."""
    return RepoConfig(
        project=project_name(settings.topic_prefix),
        provider="local",
        registry=str(settings.state_dir / "feast" / "registry.db"),
        online_store=RedisOnlineStoreConfig(
            connection_string=connection_string(settings.redis_url),
            key_ttl_seconds=ttl_seconds(spec),
        ),
        offline_store={"type": "file"},
        entity_key_serialization_version=KEY_VERSION,
    )


def to_proto(value: FeatureValue) -> ValueProto:
    if value is None:
        return ValueProto()
    if isinstance(value, bool):
        return ValueProto(bool_val=value)
    if isinstance(value, int):
        return ValueProto(int64_val=value)
    if isinstance(value, float):
        return ValueProto(double_val=value)
    return ValueProto(string_val=value)


def from_proto(raw: bytes | None) -> FeatureValue:
    if raw is None:
        return None
    proto = ValueProto()
    proto.ParseFromString(raw)
    kind = proto.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    value: Any = getattr(proto, kind)
    return value  # type: ignore[no-any-return]


class _Progress:
    """Counts the rows Feast skipped as stale (it reports each with ``progress(1)``)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, n: int) -> None:
        self.calls.append(n)


class OnlineFeatures:
    """Write and read the spec's entity features for one deployment."""

    def __init__(self, settings: Settings, spec: Spec) -> None:
        self._config = repo_config(settings, spec)
        self._view = build(spec).view
        self._store = RedisOnlineStore()
        self._project = self._config.project.encode()
        self._join_key = join_key(spec)
        self._names = tuple(spec.entity.features)
        view = view_name(spec)
        self._fields = [_mmh3(f"{view}:{name}") for name in self._names]
        self._client = redis_client(settings)

    def _entity_key(self, entity_id: str) -> EntityKeyProto:
        return EntityKeyProto(
            join_keys=[self._join_key], entity_values=[ValueProto(string_val=entity_id)]
        )

    def redis_key(self, entity_id: str) -> bytes:
        """Where Feast keeps an entity's features (serialised entity key + project)."""
        return (
            serialize_entity_key(
                self._entity_key(entity_id), entity_key_serialization_version=KEY_VERSION
            )
            + self._project
        )

    def write(self, rows: Sequence[Row]) -> int:
        """Write rows in one batch; a row older than what is stored is skipped.

        Rows of the same entity are coalesced first (the latest event time wins).
        Returns the number of entity rows written.
        """
        latest: dict[str, Row] = {}
        for row in rows:
            held = latest.get(row[0])
            if held is None or row[2] > held[2]:
                latest[row[0]] = row
        if not latest:
            return 0
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]] = [
            (
                self._entity_key(entity_id),
                {name: to_proto(features.get(name)) for name in self._names},
                ts,
                None,
            )
            for entity_id, features, ts in latest.values()
        ]
        progress = _Progress()
        self._store.online_write_batch(self._config, self._view, data, progress)
        # Feast calls progress(1) per skipped row, then once with the pipeline's results.
        skipped = len(progress.calls) - 1
        return len(data) - skipped

    def read(self, entity_ids: Sequence[str]) -> list[dict[str, FeatureValue]]:
        """One dict per entity, every entity feature by name (None when unknown).

        A spec without entity features reads nothing (Redis refuses an ``HMGET`` of no
        field)."""
        if not self._names:
            return [{} for _ in entity_ids]
        with self._client.pipeline(transaction=False) as pipe:
            for entity_id in entity_ids:
                pipe.hmget(self.redis_key(entity_id), self._fields)  # type: ignore[arg-type]
            replies = pipe.execute()
        names = self._names
        return [
            {name: from_proto(raw) for name, raw in zip(names, values, strict=True)}
            for values in replies
        ]

    def close(self) -> None:
        self._client.close()
        client = self._store._client
        if client is not None:
            client.close()
            self._store._client = None
