"""Idempotency keys: a retried write answers like the first one and changes nothing again.

A client sends `Idempotency-Key: <a unique string>` with a write (POST /items, DELETE /items/{id},
POST /users/{id}/interactions). The store keeps the key, a fingerprint of the request and the
reply, in the very transaction that makes the write: a write that committed but whose reply was
lost (the process killed, the connection dropped) is answered with its original reply when the
client retries, in any worker process. The same key with another request (method, path or body)
is refused with 422, as in the IETF draft `draft-ietf-httpapi-idempotency-key-header`. Only a
write that happened is remembered: a request refused with a 4xx stores nothing and may be sent
again with its key. Keys are remembered `idempotency_ttl_s` seconds (default 24 h); expired ones
are forgotten and purged a few at a time as new ones are stored.
"""

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.errors import BadInput

HEADER = "Idempotency-Key"
DEFAULT_TTL_S = 24 * 3600.0
MAX_KEY_CHARS = 255
_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_CHARS}}}")  # visible ASCII, no spaces


@dataclass(frozen=True)
class IdempotentRequest:
    """A request sent with an idempotency key: the key and the request's fingerprint."""

    key: str
    fingerprint: str


@dataclass(frozen=True)
class Reply:
    """A write's answer as stored with its key; `replayed` when it comes from an earlier request."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


class KeyReused(BadInput):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"the {HEADER} {key!r} was already used for another request (another method, path or body) "
            "within the time keys are kept; send a new key with a new request"
        )


def check_key(key: str) -> str:
    """The key as sent, or `BadInput` that says what a key must look like."""
    if not _KEY.fullmatch(key):
        raise BadInput(f"the {HEADER} header must be 1 to {MAX_KEY_CHARS} visible ASCII characters without "
                       "spaces (a random UUID is a good key)")
    return key


def fingerprint(method: str, path: str, params: Mapping[str, Any]) -> str:
    """sha256 of the method, the path and the request's parameters as parsed (not its bytes: the
    same item sent again as multipart with a new boundary is the same request)."""
    canonical = json.dumps([method, path, params], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
