"""Recommendations: user vector (cached) . item vectors through the index, seen items excluded.

How user vectors follow interactions (the fold-in rule) is in `service/users.py`. With filters
or exclusions (`service.selection`) the search is `ItemIndex.search_filtered`, which answers k
items whenever k pass; without, the micro-batched search of the whole index.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cliper.manifest import Fusion
from service.batcher import MicroBatcher
from service.cache import UserVectorCache, cache_key
from service.catalog import ItemCatalog
from service.explain import HISTORY_LIMIT, because, summary
from service.metrics import Metrics
from service.popularity import Popularity
from service.search import run_search
from service.selection import Selection
from service.users import UserState


@dataclass
class Recommendation:
    items: list[tuple[str, float]]
    from_cache: bool
    fallback: bool
    explanations: list[dict[str, Any]] | None = None


class RecommendationService:
    """Answers recommendation requests: the user's vector (from the cache, or computed and
    cached) searched against the index, the user's seen items left out; the popularity ranking
    for a user without a vector. Read-only: interactions are recorded by
    `service.interactions.InteractionRecorder`."""

    def __init__(
        self,
        users: UserState,
        catalog: ItemCatalog,
        fusion: Fusion,
        popularity: Popularity,
        cache: UserVectorCache,
        store_id: str,
        metrics: Metrics,
        bundle_version: str,
        offload_search: bool,
        search_batch_size: int = 64,
    ) -> None:
        self.users = users
        self.catalog = catalog
        self.index = catalog.items
        self.fusion = fusion
        self.popularity = popularity
        self.cache = cache
        self.metrics = metrics
        self.bundle_version = bundle_version
        self.offload_search = offload_search
        self.store_id = store_id  # the store's identity, part of every cache key
        self.searcher: MicroBatcher[tuple[np.ndarray, int], tuple[np.ndarray, np.ndarray]] = MicroBatcher(
            self._search_batch, max_size=search_batch_size, max_wait_s=0.0
        )

    async def recommend(self, user_id: str, k: int, selection: Selection = Selection(),
                        explain: bool = False) -> Recommendation:
        """The user's top k among the selected items; with `explain`, why each (`service.explain`)."""
        if not self.users.known(user_id):
            self.metrics.recommendations.labels("popularity").inc()
            items = (self.popularity.top(k) if selection.everything else self.popularity.top_selected(
                k, selection.allowed(self.catalog), selection.excluded_rows(self.catalog)))
            rows = [self.index.row_of(item_id) for item_id, _ in items]  # no await since: all live
            return Recommendation(items, from_cache=False, fallback=True,
                                  explanations=self._explain(user_id, rows, history=False) if explain else None)
        vector, from_cache = await self._user_vector(user_id)
        exclude = selection.excluded_rows(self.catalog, self.users.seen_item_ids(user_id))
        if selection.filters:
            rows, scores = await run_search(self.offload_search, self.metrics, self.index.search_filtered, vector,
                                            k, selection.allowed(self.catalog), exclude)
        else:
            request = (vector, k + len(exclude))
            if self.offload_search:
                rows, scores = await self.searcher.submit(request)
            else:
                rows, scores = self._search_batch([request])[0]
        picked = [
            (row, float(score))
            for row, score in zip(rows.tolist(), scores.tolist(), strict=True)
            if row >= 0 and row not in exclude and math.isfinite(score)
        ][:k]
        items = [(self.index.item_id(row), score) for row, score in picked]
        self.metrics.recommendations.labels("model").inc()
        explanations = self._explain(user_id, [row for row, _ in picked], history=True) if explain else None
        return Recommendation(items, from_cache=from_cache, fallback=False, explanations=explanations)

    def _explain(self, user_id: str, rows: list[int], history: bool) -> list[dict[str, Any]]:
        """Per item row: the user's items behind it (`history`), and its view weights in numbers and words."""
        explained = [view_explanation(self.catalog, self.fusion, row) for row in rows]
        if history:
            seen = [(item_id, row) for item_id in list(self.users.seen_item_ids(user_id))[-HISTORY_LIMIT:]
                    if (row := self.index.row_of(item_id)) is not None]
            contributions = because(self.index.vectors(rows), [item_id for item_id, _ in seen],
                                    self.index.vectors([row for _, row in seen]))
            for explanation, behind in zip(explained, contributions, strict=True):
                explanation["because"] = behind
        return explained

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

    def _search_batch(self, requests: list[tuple[np.ndarray, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        with self.metrics.timed("search"):
            queries = np.stack([vector for vector, _ in requests])
            rows, scores = self.index.search(queries, max(fetch for _, fetch in requests))
        return [(rows[i, :fetch], scores[i, :fetch]) for i, (_, fetch) in enumerate(requests)]


def view_explanation(catalog: ItemCatalog, fusion: Fusion, row: int) -> dict[str, Any]:
    """An item's view weights and their summary (`service.explain`)."""
    weights = catalog.view_weights(row)
    return {"view_weights": weights, "summary": summary(weights, fusion)}
