"""Recommendations: user vector (cached) . item vectors through the index, seen items excluded.

Fold-in rule for interactions recorded after the bundle was made. A bundle user `u` with
trained vector `u0` and `n0` training interactions (at least 1) who then interacts with items
whose vectors are `v_1..v_n` gets

    u = (n0 * u0 + v_1 + ... + v_n) / (n0 + n)

i.e. the trained vector counts as `n0` interactions and each new item as one. A user the bundle
does not know (n0 = 0) gets the mean of the vectors of the items they interacted with, so a
brand-new user is personalised from their first interaction on. Each interaction is kept with the
item's vector at that moment, so the rule replays exactly after a restart. A user with neither
a bundle vector nor interactions gets the popularity ranking, flagged as a fallback.
"""

import asyncio
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from cliper.bundle import LoadedBundle
from service.batcher import MicroBatcher
from service.cache import UserVectorCache, cache_key
from service.errors import BadInput
from service.index import ItemIndex
from service.metrics import Metrics
from service.store import Store, StoredInteraction

MAX_K = 1000


@dataclass
class Recommendation:
    items: list[tuple[str, float]]
    from_cache: bool
    fallback: bool


class UserState:
    """Bundle users plus what interactions added since: seen items and fold-in sums."""

    def __init__(self, bundle: LoadedBundle) -> None:
        self._rows = {user_id: row for row, user_id in enumerate(bundle.user_ids)}
        self.dim = bundle.manifest.dims.item
        self._vectors = bundle.user_vectors
        self._seen = bundle.seen
        self._bundle_item_ids = bundle.item_ids
        self._new_seen: dict[str, list[str]] = {}
        self._sums: dict[str, np.ndarray] = {}
        self._counts: Counter[str] = Counter()

    def known(self, user_id: str) -> bool:
        """Whether the user has a vector (from the bundle or folded in)."""
        return user_id in self._rows or self._counts[user_id] > 0

    def generation(self, user_id: str) -> int:
        """How many interactions the user has had since the bundle (part of the cache key)."""
        return len(self._new_seen.get(user_id, ()))

    def vector(self, user_id: str) -> np.ndarray:
        """The user's vector by the fold-in rule (module docstring); the user must be `known`."""
        row = self._rows.get(user_id)
        count = self._counts[user_id]
        if count == 0:
            return self._vectors[row]
        if row is None:
            return (self._sums[user_id] / count).astype(np.float32)
        n0 = max(len(self._seen.items_of(row)), 1)
        return ((n0 * self._vectors[row] + self._sums[user_id]) / (n0 + count)).astype(np.float32)

    def seen_item_ids(self, user_id: str) -> Iterator[str]:
        row = self._rows.get(user_id)
        if row is not None:
            yield from (self._bundle_item_ids[item] for item in self._seen.items_of(row))
        yield from self._new_seen.get(user_id, ())

    def record(self, user_id: str, item_ids: Sequence[str], vectors: np.ndarray | None) -> None:
        """Add interactions: always seen; folded in when their item vectors are given."""
        self._new_seen.setdefault(user_id, []).extend(item_ids)
        if vectors is not None:
            total = vectors.sum(axis=0, dtype=np.float64)
            self._sums[user_id] = self._sums[user_id] + total if user_id in self._sums else total
            self._counts[user_id] += len(vectors)


class Popularity:
    """Bundle interaction counts plus interactions since, ranked over live items (cached)."""

    def __init__(self, bundle: LoadedBundle, index: ItemIndex) -> None:
        self._index = index
        self._base = bundle.popularity.astype(np.float64)
        self._bundle_rows = {item_id: row for row, item_id in enumerate(bundle.item_ids)}
        self._extra: Counter[str] = Counter()
        self._changes = 0
        self._ranking: list[tuple[str, float]] = []
        self._ranked_at: tuple[int, int] | None = None

    def add(self, item_ids: Sequence[str]) -> None:
        self._extra.update(item_ids)
        self._changes += 1

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most popular live items; re-ranked only after items or interactions changed."""
        state = (self._index.version, self._changes)
        if state != self._ranked_at:
            self._ranking = self._rank()
            self._ranked_at = state
        return self._ranking[:k]

    def _rank(self) -> list[tuple[str, float]]:
        live = self._index.live_mask()
        scores = np.zeros(len(live))
        scores[: len(self._base)] = self._base
        for row in np.flatnonzero(live[len(self._base) :]) + len(self._base):
            bundle_row = self._bundle_rows.get(self._index.item_id(row))
            if bundle_row is not None:  # a replaced catalog item keeps its popularity
                scores[row] = self._base[bundle_row]
        for item_id, count in self._extra.items():
            row = self._index.row_of(item_id)
            if row is not None:
                scores[row] += count
        rows = np.flatnonzero(live)
        order = rows[np.lexsort((rows, -scores[rows]))][:MAX_K]
        return [(self._index.item_id(row), float(scores[row])) for row in order]


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
        search_batch_size: int = 64,
    ) -> None:
        self.users = users
        self.index = index
        self.popularity = popularity
        self.cache = cache
        self.store = store
        self.metrics = metrics
        self.bundle_version = bundle_version
        self.searcher: MicroBatcher[tuple[np.ndarray, int], tuple[np.ndarray, np.ndarray]] = MicroBatcher(
            self._search_batch, max_size=search_batch_size, max_wait_s=0.0
        )

    async def recommend(self, user_id: str, k: int) -> Recommendation:
        if not self.users.known(user_id):
            self.metrics.recommendations.labels("popularity").inc()
            return Recommendation(self.popularity.top(k), from_cache=False, fallback=True)
        vector, from_cache = await self._user_vector(user_id)
        exclude = self._seen_rows(user_id)
        rows, scores = await self.searcher.submit((vector, k + len(exclude)))
        items = [
            (self.index.item_id(row), float(score))
            for row, score in zip(rows.tolist(), scores.tolist(), strict=True)
            if row >= 0 and row not in exclude and math.isfinite(score)
        ][:k]
        self.metrics.recommendations.labels("model").inc()
        return Recommendation(items, from_cache=from_cache, fallback=False)

    async def record(self, user_id: str, item_ids: Sequence[str]) -> int:
        """Persist interactions, then fold them in; returns the user's interactions since the bundle."""
        rows = [self.index.row_of(item_id) for item_id in item_ids]
        unknown = sorted({item_id for item_id, row in zip(item_ids, rows, strict=True) if row is None})
        if unknown:
            raise BadInput(
                f"{len(unknown)} item id(s) are not in the catalog (never ingested or deleted); "
                "ingest them first or drop them", unknown_item_ids=unknown,
            )
        vectors = self.index.vectors(rows)
        old_key = cache_key(self.bundle_version, user_id, self.users.generation(user_id))
        stored = [StoredInteraction(user_id, item_id, vector, self.bundle_version)
                  for item_id, vector in zip(item_ids, vectors, strict=True)]
        with self.metrics.timed("store"):
            await asyncio.to_thread(self.store.add_interactions, stored)
        self.users.record(user_id, item_ids, vectors)
        self.popularity.add(item_ids)
        with self.metrics.timed("cache"):
            await self.cache.delete(old_key)
        return self.users.generation(user_id)

    def replay(self, interactions: Iterable[StoredInteraction]) -> None:
        """Re-apply persisted interactions at start-up.

        An interaction stored under another bundle version uses the item's current vector (the
        old one lives in another model's space) or, for an item gone since, is only kept as seen.
        """
        for interaction in interactions:
            vector = interaction.vector
            if interaction.bundle_version != self.bundle_version:
                row = self.index.row_of(interaction.item_id)
                if row is None:
                    self.users.record(interaction.user_id, [interaction.item_id], None)
                    continue
                vector = self.index.vectors([row])[0]
            self.users.record(interaction.user_id, [interaction.item_id], vector[None, :])
            self.popularity.add([interaction.item_id])

    async def _user_vector(self, user_id: str) -> tuple[np.ndarray, bool]:
        key = cache_key(self.bundle_version, user_id, self.users.generation(user_id))
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
        rows = (self.index.row_of(item_id) for item_id in self.users.seen_item_ids(user_id))
        return {row for row in rows if row is not None}

    def _search_batch(self, requests: list[tuple[np.ndarray, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        with self.metrics.timed("search"):
            queries = np.stack([vector for vector, _ in requests])
            rows, scores = self.index.search(queries, max(fetch for _, fetch in requests))
        return [(rows[i, :fetch], scores[i, :fetch]) for i, (_, fetch) in enumerate(requests)]
