"""The HTTP side of idempotency keys (`service.idempotency`): the header, replays, replies."""

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Header
from fastapi.responses import JSONResponse

from service.idempotency import IdempotentRequest, Reply, check_key, fingerprint
from service.state import Services

REPLAYED_HEADER = "Idempotent-Replayed"


async def idempotency_key(
    idempotency_key: Annotated[str | None, Header(
        description="a unique string (e.g. a random UUID) per write; a retry with it is answered with "
        "the first reply and changes nothing again")] = None,
) -> str | None:
    return None if idempotency_key is None else check_key(idempotency_key)


IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]


def idempotent(key: str | None, method: str, path: str, params: Mapping[str, Any]) -> IdempotentRequest | None:
    """The request to remember under `key` (None without a key)."""
    return None if key is None else IdempotentRequest(key, fingerprint(method, path, params))


async def replay(services: Services, once: IdempotentRequest | None) -> JSONResponse | None:
    """The remembered reply to this request, if it was made before (checked before any work; the
    write checks again in its transaction, for retries that arrive while the first is running)."""
    if once is None:
        return None
    reply = await asyncio.to_thread(services.store.recall, once)
    return None if reply is None else as_response(reply)


def as_response(reply: Reply) -> JSONResponse:
    headers = {REPLAYED_HEADER: "true"} if reply.replayed else None
    return JSONResponse(reply.body, reply.status, headers=headers)

