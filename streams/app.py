"""``faust -A streams.app worker``: the streams app for the ``LOOPLINE_*`` environment."""

from __future__ import annotations

from loopline.settings import Settings
from streams.topology import build_app

app = build_app(Settings.from_env())
