"""The keyed holdout slice: a share of events no producer can aim at without the key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from loopline.errors import ConfigError
from loopline.holdout import DEVELOPMENT_KEY, Holdout, holdout_key, new_key, parse_key
from loopline.settings import Settings
from loopline.signing import require_safe
from tests.unit.signing_support import production

IDS = [f"ev-{i}" for i in range(20000)]


def share(holdout: Holdout) -> float:
    return sum(i in holdout for i in IDS) / len(IDS)


def test_each_key_holds_out_its_fraction_and_keys_choose_different_slices() -> None:
    first, second = Holdout(0.1, parse_key(new_key())), Holdout(0.1, parse_key(new_key()))
    assert share(first) == pytest.approx(0.1, abs=0.01)
    assert share(second) == pytest.approx(0.1, abs=0.01)
    both = sum(i in first and i in second for i in IDS) / len(IDS)
    assert both == pytest.approx(0.01, abs=0.005)  # independent: no more than chance


def test_ids_chosen_by_the_unkeyed_hash_land_in_the_holdout_only_by_chance() -> None:
    """What a producer could aim at before: ids whose plain blake2b falls under 10%."""

    def unkeyed(event_id: str) -> float:
        digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    aimed = [i for i in IDS if unkeyed(i) < 0.1]
    holdout = Holdout(0.1, parse_key(new_key()))
    hit = sum(i in holdout for i in aimed) / len(aimed)
    assert hit == pytest.approx(0.1, abs=0.03)


def test_nothing_or_everything() -> None:
    assert "e" not in Holdout(0.0, DEVELOPMENT_KEY)
    assert "e" in Holdout(1.0, DEVELOPMENT_KEY)


def test_development_mode_falls_back_to_the_development_key_and_nowhere_else() -> None:
    assert holdout_key(Settings.from_env({"LOOPLINE_ENV": "dev"})) == DEVELOPMENT_KEY
    with pytest.raises(ConfigError, match="LOOPLINE_HOLDOUT_KEY is not set.*LOOPLINE_ENV=dev"):
        holdout_key(Settings.from_env({}))


def test_a_key_file_and_its_content_are_the_same_key(tmp_path: Path) -> None:
    text = new_key()
    (tmp_path / "holdout.key").write_text(text + "\n")
    by_file = holdout_key(Settings.from_env({}, holdout_key=str(tmp_path / "holdout.key")))
    assert by_file == holdout_key(Settings.from_env({}, holdout_key=text))
    assert by_file != DEVELOPMENT_KEY


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="LOOPLINE_HOLDOUT_KEY: a holdout key is at least 16"):
        holdout_key(Settings.from_env({}, holdout_key="s3cret"))


def test_child_processes_get_the_same_key() -> None:
    settings = Settings.from_env({}, holdout_key=new_key())
    child = Settings.from_env(settings.process_env({}))
    assert holdout_key(child) == holdout_key(settings)
    assert "s3cret" not in repr(Settings.from_env({}, holdout_key="s3cret-of-16-chars"))


@pytest.mark.parametrize("worker", ["trainer", "pusher"])
def test_workers_that_compute_the_slice_refuse_to_start_without_the_key(
    tmp_path: Path, worker: str
) -> None:
    settings = production(tmp_path).replace(holdout_key=None)
    settings = settings.replace(
        **{"pusher_signing_key" if worker == "trainer" else "signing_key": None}
    )
    with pytest.raises(ConfigError, match="refuses to start.*LOOPLINE_HOLDOUT_KEY is not set"):
        require_safe(settings, worker)  # type: ignore[arg-type]
