from __future__ import annotations

from pathlib import Path

import orjson

from loopline.routing import RoutingStore
from loopline.settings import Settings
from loopline.spec import DEFAULT_SPEC, load_spec
from tests.integration.serving.serving_support import (
    announce,
    publish_examples,
    pusher,
    store_of,
    wait_for,
)
from tests.unit.pusher.pusher_support import ConstantModel, examples, save, train


def test_bad_checkpoints_are_refused_with_their_reasons(settings: Settings) -> None:
    spec = load_spec(DEFAULT_SPEC)
    store = store_of(settings)
    model = train(spec, examples(2000, seed=2))
    good = save(store, spec, "ck-good", model, lineage="a")
    constant = save(store, spec, "ck-constant", ConstantModel(0.9), lineage="b")
    foreign = save(store, spec, "ck-foreign", model, lineage="c", schema_hash="0123456789abcdef")
    tampered = save(store, spec, "ck-tampered", model, lineage="d")
    path = Path(settings.checkpoint_dir) / "ck-tampered.json"
    path.write_bytes(path.read_bytes().replace(b'"examples_seen":0', b'"examples_seen":9'))
    publish_examples(settings, examples(spec.qualification.min_holdout, seed=5, holdout=0.1))
    routing = RoutingStore(settings)
    try:
        with pusher(settings, spec):
            announce(settings, good, constant, foreign, tampered)
            ids = ("ck-good", "ck-constant", "ck-foreign", "ck-tampered")
            verdicts = wait_for(
                lambda: (
                    all(routing.verdict(i) for i in ids) and {i: routing.verdict(i) for i in ids}
                ),
                "four verdicts",
            )
        served, table = routing.served(), routing.table()
    finally:
        routing.close()
    assert verdicts["ck-good"]["verdict"] == "qualified"
    assert verdicts["ck-good"]["action"] == "champion: nothing was serving"
    assert verdicts["ck-good"]["manifest"]["lineage"] == "a"
    assert table.champion == "ck-good" and served == {"ck-good"}

    def codes(cid: str) -> set[str]:
        verdict = verdicts[cid]
        assert verdict["verdict"] == "refused", verdict
        return {r.split(":")[0] for r in verdict["reasons"]}

    assert codes("ck-constant") == {"constant", "mean", "metric", "calibration"}
    assert codes("ck-foreign") == {"schema"}
    assert codes("ck-tampered") == {"signature"}
    assert "signature missing or invalid" in verdicts["ck-tampered"]["reasons"][0]
    assert verdicts["ck-constant"]["champion"] == "ck-good"
    assert orjson.dumps(verdicts["ck-constant"]["figures"])
