from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from loopline.spec import DEFAULT_SPEC, load_spec
from ops.demo_spec import V2_MODEL, changes, to_toml, write_specs

SHIPPED = load_spec(DEFAULT_SPEC)


def test_the_demo_specs_load_and_keep_serving_s_feature_schema(tmp_path: Path) -> None:
    v1, v2 = write_specs(tmp_path, dwell_seconds=9).load()
    assert v1.schema_hash == v2.schema_hash == SHIPPED.schema_hash
    assert (v1.name, v2.name) == (SHIPPED.name, SHIPPED.name)
    assert (v1.spec_version, v2.spec_version) == (SHIPPED.spec_version, SHIPPED.spec_version + 1)
    assert v1.ramp.dwell_seconds == v2.ramp.dwell_seconds == 9
    assert v1.ramp.stages == SHIPPED.ramp.stages
    assert v1.model == SHIPPED.model
    assert (v2.model.factory, dict(v2.model.params)) == (V2_MODEL["factory"], V2_MODEL["params"])
    assert v1.label.horizon_seconds < SHIPPED.label.horizon_seconds


def test_only_the_demo_s_pace_differs_from_the_shipped_spec(tmp_path: Path) -> None:
    specs = write_specs(tmp_path, dwell_seconds=9)
    shipped = tomllib.loads(DEFAULT_SPEC.read_text())
    written = tomllib.loads(specs.v1.read_text())
    differing = {
        (section, key)
        for section in shipped
        if isinstance(shipped[section], dict)
        for key in shipped[section]
        if written[section][key] != shipped[section][key]
    }
    assert differing == {
        ("ramp", "dwell_seconds"),
        ("label", "horizon_seconds"),
        ("label", "description"),
    }
    assert load_spec(DEFAULT_SPEC) == SHIPPED  # the shipped file is left alone
    assert changes(dwell_seconds=9)[0] == "ramp.dwell_seconds 300 → 9"


@pytest.mark.parametrize(
    "data",
    [
        {"a": 1.5e-5, "b": 'quote " and \\ and ü\n', "c": [1, 2.5, True, "x"]},
        {"t": {"u": {"v": {"w": False}}, "inline": [{"k": 1}, {"k": 2}]}},
        {"odd key": {"dotted.key": -3}},
    ],
)
def test_to_toml_round_trips(data: dict[str, object]) -> None:
    assert tomllib.loads(to_toml(data)) == data
