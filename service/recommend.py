"""Recommendations: user vector (cached) . item vectors through the index, seen items excluded.

How user vectors follow interactions (the fold-in rule) is in `service/users.py`.
"""

import math
from dataclasses import dataclass

import numpy as np

from service.batcher import MicroBatcher
from service.cache import UserVectorCache, cache_key
from service.index import ItemIndex
from service.metrics import Metrics
from service.popularity import Popularity
from service.users import UserState


@dataclass
class Recommendation:
    items: list[tuple[str, float]]
    from_cache: bool
    fallback: bool


class RecommendationService:
    """Answers recommendation requests: the user's vector (from the cache, or computed and
    cached) searched against the index, the user's seen items left out; the popularity ranking
    for a user without a vector. Read-only: interactions are recorded by
    `service.interactions.InteractionRecorder`."""

    def __init__(
        self,
        users: UserState,
        index: ItemIndex,
        popularity: Popularity,
        cache: UserVectorCache,
        store_id: str,
        metrics: Metrics,
        bundle_version: str,
        offload_search: bool,
        search_batch_size: int = 64,
    ) -> None:
        self.users = users
        self.index = index
        self.popularity = popularity
        self.cache = cache
        self.metrics = metrics
        self.bundle_version = bundle_version
        self.offload_search = offload_search
        self.store_id = store_id  # the store's identity, part of every cache key
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

    async def _user_vector(self, user_id: str) -> tuple[np.ndarray, bool]:
        key = cache_key(self.bundle_version, self.store_id, user_id, self.users.generation(user_id))
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

    def _seen_rows(self, user_id: str) -> set[int]:
        return self.index.rows_of(self.users.seen_item_ids(user_id))

    def _search_batch(self, requests: list[tuple[np.ndarray, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        with self.metrics.timed("search"):
            queries = np.stack([vector for vector, _ in requests])
            rows, scores = self.index.search(queries, max(fetch for _, fetch in requests))
        return [(rows[i, :fetch], scores[i, :fetch]) for i, (_, fetch) in enumerate(requests)]
