"""What ``feast apply`` registers: the definitions for the spec in ``LOOPLINE_SPEC``."""

from __future__ import annotations

import os

from feature_repo.definitions import build
from loopline.spec import DEFAULT_SPEC, load_spec

_definitions = build(load_spec(os.environ.get("LOOPLINE_SPEC") or DEFAULT_SPEC))
entity = _definitions.entity
push_source = _definitions.push_source
feature_view = _definitions.view
