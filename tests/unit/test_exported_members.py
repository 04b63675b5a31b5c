from __future__ import annotations

import loopline


def test_public_surface_is_small_and_pinned() -> None:
    assert set(loopline.__all__) == {
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
    }
    for name in loopline.__all__:
        assert getattr(loopline, name).__module__.startswith("loopline.")
