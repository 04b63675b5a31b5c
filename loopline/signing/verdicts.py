"""Signed verdicts: the pusher's word that a checkpoint qualified, which Redis only carries.

The pusher signs, with its private key, the checkpoint id, the digest of the exact
manifest it judged, the verdict and when it decided. Serving verifies that signature
with the pusher's public key and that the digest is the manifest it is about to load:
whoever can write Redis can route to a checkpoint, never qualify one.
"""

from __future__ import annotations

from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from loopline.signing.keys import sign, verify

DOMAIN = b"loopline-verdict-v1"
SIGNED = ("checkpoint_id", "manifest_sha256", "verdict", "decided_at")


def _payload(document: dict[str, Any]) -> bytes:
    fields = {name: document.get(name) for name in SIGNED}
    if not all(isinstance(v, str) for v in fields.values()):
        raise ValueError(f"a verdict's {', '.join(SIGNED)} are strings")
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def sign_verdict(document: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The verdict document with its ``signature`` over the :data:`SIGNED` fields."""
    return {**document, "signature": sign(key, DOMAIN, _payload(document))}


def verdict_refusal(
    document: dict[str, Any] | None,
    checkpoint_id: str,
    manifest_sha256: str,
    key: Ed25519PublicKey,
) -> str | None:
    """Why this verdict does not qualify the checkpoint with that manifest; None if it does."""
    if document is None:
        return f"checkpoint {checkpoint_id} was not qualified by the pusher: no verdict"
    try:
        payload = _payload(document)
    except ValueError as exc:
        return f"checkpoint {checkpoint_id}: malformed verdict: {exc}"
    if not verify(key, DOMAIN, payload, str(document.get("signature", ""))):
        return f"checkpoint {checkpoint_id}: verdict signature missing or invalid"
    if document["checkpoint_id"] != checkpoint_id:
        return f"checkpoint {checkpoint_id}: the verdict is on {document['checkpoint_id']}"
    if document["manifest_sha256"] != manifest_sha256:
        return f"checkpoint {checkpoint_id}: the verdict was on another manifest"
    if document["verdict"] != "qualified":
        return f"checkpoint {checkpoint_id} was not qualified by the pusher"
    return None
