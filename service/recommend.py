"""Recommendations: user vector (cached) . item vectors through the index, seen items excluded.

How user vectors follow interactions (the fold-in rule) is in `service/users.py`.
"""

import asyncio
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np

from service.batcher import MicroBatcher
from service.cache import UserVectorCache, cache_key
from service.errors import BadInput
from service.idempotency import IdempotentRequest, Reply
from service.index import ItemIndex
from service.metrics import Metrics
from service.popularity import Popularity
from service.store import Store, StoredInteraction, WriteTransaction
from service.users import UserState


@dataclass
class Recommendation:
    items: list[tuple[str, float]]
    from_cache: bool
    fallback: bool


@dataclass
class Recorded:
    """The body of an interactions reply."""

    user_id: str
    recorded: int
    interactions_since_bundle: int
    bundle_version: str


class Recommender:
    """Answers recommendation requests and records interactions."""

    def __init__(
        self,
        users: UserState,
        index: ItemIndex,
        popularity: Popularity,
        cache: UserVectorCache,
        store: Store,
        metrics: Metrics,
        bundle_version: str,
        offload_search: bool,
        search_batch_size: int = 64,
    ) -> None:
        self.users = users
        self.index = index
        self.popularity = popularity
        self.cache = cache
        self.store = store
        self.metrics = metrics
        self.bundle_version = bundle_version
        self.offload_search = offload_search
        self.store_id = store.identity()
        self.searcher: MicroBatcher[tuple[np.ndarray, int], tuple[np.ndarray, np.ndarray]] = MicroBatcher(
            self._search_batch, max_size=search_batch_size, max_wait_s=0.0
        )

    async def recommend(self, user_id: str, k: int) -> Recommendation:
        if not self.users.known(user_id):
            self.metrics.recommendations.labels("popularity").inc()
            return Recommendation(self.popularity.top(k), from_cache=False, fallback=True)
        vector, from_cache = await self._user_vector(user_id)
        exclude = self._seen_rows(user_id)
        request = (vector, k + len(exclude))
        if self.offload_search:
            rows, scores = await self.searcher.submit(request)
        else:
            rows, scores = self._search_batch([request])[0]
        items = [
            (self.index.item_id(row), float(score))
            for row, score in zip(rows.tolist(), scores.tolist(), strict=True)
            if row >= 0 and row not in exclude and math.isfinite(score)
        ][:k]
        self.metrics.recommendations.labels("model").inc()
        return Recommendation(items, from_cache=from_cache, fallback=False)

    async def record(self, user_id: str, item_ids: Sequence[str], once: IdempotentRequest | None = None) -> Reply:
        """Persist interactions, then fold them in (201 and a `Recorded` body). An item named
        twice in one call is one interaction: seen once, folded in once."""
        item_ids = list(dict.fromkeys(item_ids))
        rows = [self.index.row_of(item_id) for item_id in item_ids]
        unknown = sorted({item_id for item_id, row in zip(item_ids, rows, strict=True) if row is None})
        if unknown:
            raise BadInput(
                f"{len(unknown)} item id(s) are not in the catalog (never ingested or deleted); "
                "ingest them first or drop them", unknown_item_ids=unknown,
            )
        vectors = self.index.vectors(rows)
        old_key = self._cache_key(user_id)
        stored = [StoredInteraction(user_id, item_id, vector, self.bundle_version)
                  for item_id, vector in zip(item_ids, vectors, strict=True)]
        with self.metrics.timed("store"):
            reply = await asyncio.to_thread(self._store, user_id, stored, once)
        with self.metrics.timed("cache"):
            await self.cache.delete(old_key)
        return reply

    def _store(self, user_id: str, rows: list[StoredInteraction], once: IdempotentRequest | None) -> Reply:
        with self.store.transaction() as tx:
            return tx.once(once, partial(self._add, tx, user_id, rows))

    def _add(self, tx: WriteTransaction, user_id: str, rows: list[StoredInteraction]) -> Reply:
        tx.add_interactions(rows)
        total = tx.interaction_count(user_id)
        return Reply(201, asdict(Recorded(user_id, len(rows), total, self.bundle_version)))

    async def _user_vector(self, user_id: str) -> tuple[np.ndarray, bool]:
        key = self._cache_key(user_id)
        with self.metrics.timed("cache"):
            cached = await self.cache.get(key)
        if cached is not None and cached.shape != (self.users.dim,):  # written by something else
            cached = None
        self.metrics.cache_requests.labels("miss" if cached is None else "hit").inc()
        if cached is not None:
            return cached, True
        vector = self.users.vector(user_id)
        with self.metrics.timed("cache"):
            await self.cache.set(key, vector)
        return vector, False

    def _cache_key(self, user_id: str) -> str:
        return cache_key(self.bundle_version, self.store_id, user_id, self.users.generation(user_id))

    def _seen_rows(self, user_id: str) -> set[int]:
        return self.index.rows_of(self.users.seen_item_ids(user_id))

    def _search_batch(self, requests: list[tuple[np.ndarray, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        with self.metrics.timed("search"):
            queries = np.stack([vector for vector, _ in requests])
            rows, scores = self.index.search(queries, max(fetch for _, fetch in requests))
        return [(rows[i, :fetch], scores[i, :fetch]) for i, (_, fetch) in enumerate(requests)]
