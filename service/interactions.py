"""The write path of users: POST /users/{id}/interactions.

Interactions are checked against the catalog, stored (with the item's vector at the time, so a
replayed fold-in is exact) and only then folded in: every worker applies them from the store's
log before its next request (`service.follower`), this one included. The reply is made in the
store transaction and kept with the request's idempotency key, if any (`service.idempotency`).
How a user's vector follows their interactions (the fold-in rule) is in `service/users.py`.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial

from service.cache import UserVectorCache, cache_key
from service.errors import BadInput
from service.idempotency import IdempotentRequest, Reply
from service.index import ItemIndex
from service.metrics import Metrics
from service.store import Store, StoredInteraction, WriteTransaction
from service.users import UserState


@dataclass
class Recorded:
    """The body of an interactions reply."""

    user_id: str
    recorded: int
    interactions_since_bundle: int
    bundle_version: str


class InteractionRecorder:
    """Records users' interactions in the store and drops their cached vectors."""

    def __init__(self, users: UserState, index: ItemIndex, cache: UserVectorCache, store: Store, metrics: Metrics,
                 bundle_version: str) -> None:
        self.users = users
        self.index = index
        self.cache = cache
        self.store = store
        self.metrics = metrics
        self.bundle_version = bundle_version
        self.store_id = store.identity()

    async def record(self, user_id: str, item_ids: Sequence[str], once: IdempotentRequest | None = None) -> Reply:
        """Persist interactions (201 and a `Recorded` body); `BadInput` naming the items the
        catalog does not hold. An item named twice in one call is one interaction: seen once,
        folded in once."""
        item_ids = list(dict.fromkeys(item_ids))
        rows = [self.index.row_of(item_id) for item_id in item_ids]
        unknown = sorted({item_id for item_id, row in zip(item_ids, rows, strict=True) if row is None})
        if unknown:
            raise BadInput(
                f"{len(unknown)} item id(s) are not in the catalog (never ingested or deleted); "
                "ingest them first or drop them", unknown_item_ids=unknown,
            )
        vectors = self.index.vectors(rows)
        old_key = cache_key(self.bundle_version, self.store_id, user_id, self.users.generation(user_id))
        stored = [StoredInteraction(user_id, item_id, vector, self.bundle_version)
                  for item_id, vector in zip(item_ids, vectors, strict=True)]
        with self.metrics.timed("store"):
            reply = await asyncio.to_thread(self._store, user_id, stored, once)
        with self.metrics.timed("cache"):
            await self.cache.delete(old_key)  # never read again (the key's count moved on): free it now
        return reply

    def _store(self, user_id: str, rows: list[StoredInteraction], once: IdempotentRequest | None) -> Reply:
        with self.store.transaction() as tx:
            return tx.once(once, partial(self._add, tx, user_id, rows))

    def _add(self, tx: WriteTransaction, user_id: str, rows: list[StoredInteraction]) -> Reply:
        tx.add_interactions(rows)
        total = tx.interaction_count(user_id)
        return Reply(201, asdict(Recorded(user_id, len(rows), total, self.bundle_version)))
