"""API keys: 256-bit random secrets, stored as SHA-256 digests, compared in constant time.

A key reads `mmg_<prefix>_<secret>`: the prefix (public, unique) finds the row, the digest of the
whole key is then compared with hmac.compare_digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_SCHEME = "mmg"
PREFIX_BYTES = 6
SECRET_BYTES = 32  # 256 bits


def generate_key() -> tuple[str, str, str]:
    """Return (key, prefix, digest); only the prefix and digest are stored."""
    prefix = secrets.token_hex(PREFIX_BYTES)
    key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return key, prefix, digest_key(key)


def digest_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_prefix(key: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != 2 * PREFIX_BYTES or not parts[2]:
        return None
    return parts[1]


def key_matches(key: str, digest: str) -> bool:
    return hmac.compare_digest(digest_key(key), digest)
