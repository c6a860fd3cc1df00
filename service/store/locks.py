"""Names of PostgreSQL advisory locks as the 64-bit keys the lock functions take."""

import hashlib


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for `name` (the same in every process and release)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
