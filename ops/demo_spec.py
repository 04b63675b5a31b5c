"""The demo's own specs: the shipped yarn-shop spec at demo pace, and its version 2.

Both are written from ``loopline/specs/yarn_shop.toml`` into the demo's state dir, so
the shipped spec keeps its production values. Only what a few-minute demo needs
changes (:func:`demo_pace`): a ramp stage dwells seconds instead of minutes, and a
click counts within half a minute instead of a minute, so that labels, and with them
the first model and the books' last word, come sooner. Version 2 is another model over
the same features (so its feature schema, and thus serving's, stays the same).

>>> v1 = demo_spec_data(dwell_seconds=10)
>>> v1["ramp"]["dwell_seconds"], v1["label"]["horizon_seconds"], v1["spec_version"]
(10, 30, 1)
>>> version_2(v1)["model"]["params"]
{'lr': 0.1, 'l2': 0.0}
"""

from __future__ import annotations

import copy
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.spec import DEFAULT_SPEC, Spec, load_spec

#: Version 2 of the yarn-shop model: the same features into a faster-learning
#: logistic regression without L2 (version 1: lr 0.05, l2 1e-4).
V2_MODEL: dict[str, Any] = {
    "factory": "loopline.models:logistic_regression",
    "params": {"lr": 0.1, "l2": 0.0},
}

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True, slots=True)
class DemoSpecs:
    v1: Path
    v2: Path

    def load(self) -> tuple[Spec, Spec]:
        return load_spec(self.v1), load_spec(self.v2)


#: The label horizon of the demo's spec (the shipped spec waits a minute).
HORIZON_SECONDS = 30


def demo_pace(dwell_seconds: float) -> dict[tuple[str, str], Any]:
    """What the demo's spec changes in the shipped one: (section, key) to value."""
    return {
        ("ramp", "dwell_seconds"): dwell_seconds,
        ("label", "horizon_seconds"): HORIZON_SECONDS,
        ("label", "description"): f"1 if the impression was clicked within {HORIZON_SECONDS} s; "
        "no click in time means 0.",
    }


def demo_spec_data(base: Path = DEFAULT_SPEC, *, dwell_seconds: float) -> dict[str, Any]:
    """The shipped spec's content at the demo's pace."""
    data = tomllib.loads(base.read_text())
    for (section, key), value in demo_pace(dwell_seconds).items():
        data[section][key] = value
    return data


def changes(base: Path = DEFAULT_SPEC, *, dwell_seconds: float) -> list[str]:
    """``ramp.dwell_seconds 300 → 12`` for each number the demo's pace changes."""
    shipped = tomllib.loads(base.read_text())
    return [
        f"{section}.{key} {shipped[section][key]:g} → {value:g}"
        for (section, key), value in demo_pace(dwell_seconds).items()
        if isinstance(value, int | float)
    ]


def version_2(data: Mapping[str, Any]) -> dict[str, Any]:
    """The same spec one version on, with :data:`V2_MODEL` as its model."""
    v2 = copy.deepcopy(dict(data))
    v2["spec_version"] = int(data["spec_version"]) + 1
    v2["model"] = copy.deepcopy(V2_MODEL)
    v2["description"] = f"{data.get('description', '')} Version 2: another model, same features."
    return v2


def write_specs(directory: Path, *, dwell_seconds: float, base: Path = DEFAULT_SPEC) -> DemoSpecs:
    """Write the demo's version 1 and 2 specs into ``directory``; both are loaded back
    (a spec the workers would refuse fails here, naming the file)."""
    directory.mkdir(parents=True, exist_ok=True)
    v1_data = demo_spec_data(base, dwell_seconds=dwell_seconds)
    specs = DemoSpecs(directory / "yarn_shop_v1.toml", directory / "yarn_shop_v2.toml")
    for path, data in ((specs.v1, v1_data), (specs.v2, version_2(v1_data))):
        text = to_toml(data)
        if tomllib.loads(text) != data:  # the writer below covers what specs use, no more
            raise ValueError(f"{path}: the spec does not survive a TOML round trip")
        path.write_text(f"# Written by `loopline demo` from {base.name}.\n{text}")
    v1, v2 = specs.load()
    if v1.schema_hash != v2.schema_hash:
        raise ValueError(f"{specs.v2}: version 2 changed the feature schema")
    return specs


def to_toml(data: Mapping[str, Any]) -> str:
    """TOML for a spec-shaped mapping: tables, scalars, arrays, arrays of inline tables.

    >>> print(to_toml({"a": 1, "t": {"s": "x", "l": [1.5, True], "u": {"k": "v"}}}), end="")
    a = 1
    <BLANKLINE>
    [t]
    s = "x"
    l = [1.5, true]
    <BLANKLINE>
    [t.u]
    k = "v"
    """
    lines: list[str] = []
    _table(lines, (), data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    if path:
        lines.extend(["", f"[{'.'.join(_key(p) for p in path)}]"])
    for key, value in table.items():
        if not isinstance(value, Mapping):
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in table.items():
        if isinstance(value, Mapping):
            _table(lines, (*path, key), value)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's
    if isinstance(value, list | tuple):
        return f"[{', '.join(_value(v) for v in value)}]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__} {value!r}")
