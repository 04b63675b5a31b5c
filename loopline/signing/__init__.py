"""Trust: who signs checkpoints, verdicts and Commands, who verifies them, and what a
worker refuses to start with outside development mode.

- :mod:`loopline.signing.keys`: Ed25519 keys, key files, the development pair.
- :mod:`loopline.signing.verdicts`: the pusher's signed verdicts.
- :mod:`loopline.signing.commands`: operators' signed Commands on ``control``.
- :mod:`loopline.signing.guard`: :func:`require_safe`, called at every worker's start.
"""

from __future__ import annotations

from loopline.signing.guard import require_safe
from loopline.signing.keys import private_key, public_key
from loopline.signing.verdicts import sign_verdict, verdict_refusal

__all__ = ["private_key", "public_key", "require_safe", "sign_verdict", "verdict_refusal"]
