"""Item popularity: bundle interaction counts plus interactions since, over live items.

Scores are one numpy array over the rows, rebuilt after a change with a few vectorized look-ups
(the bundle's ids are an `IdMap`: no dict of a million item ids per worker).
"""

from collections import Counter
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from cliper.bundle import LoadedBundle
from cliper.ids import IdMap
from service.index import ItemIndex

MAX_K = 1000


class Popularity:
    """Bundle interaction counts plus interactions since, ranked over live items (cached)."""

    def __init__(self, bundle: LoadedBundle, index: ItemIndex, extra: Mapping[str, int] | None = None) -> None:
        """`extra`: interactions per item since the bundle, as `extra()` of an earlier run gave them."""
        self._index = index
        self._base = bundle.popularity.astype(np.float64)
        self._bundle_ids = IdMap.of(bundle.item_ids)
        self._extra: Counter[str] = Counter(extra or {})
        self._changes = 0
        self._ranking: list[tuple[str, float]] = []
        self._scores = np.zeros(0)
        self._ranked_at: tuple[int, int] | None = None

    def extra(self) -> dict[str, int]:
        """A copy of the interactions per item since the bundle."""
        return dict(self._extra)

    def add(self, item_ids: Sequence[str]) -> None:
        self._extra.update(item_ids)
        self._changes += 1

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most popular live items; re-ranked only after items or interactions changed."""
        self._refresh()
        return self._ranking[:k]

    def top_selected(self, k: int, allowed: np.ndarray | None, exclude: Collection[int]) -> list[tuple[str, float]]:
        """The k most popular live items among the `allowed` rows (None: all), without `exclude`."""
        self._refresh()
        scores = self._scores.copy()  # -inf: dead rows
        if allowed is not None:
            passing = np.zeros(len(scores), dtype=bool)
            n = min(len(allowed), len(scores))
            passing[:n] = allowed[:n]
            scores[~passing] = -np.inf
        scores[list(exclude)] = -np.inf
        return self._ranked(scores, k)

    def _refresh(self) -> None:
        state = (self._index.version, self._changes)
        if state != self._ranked_at:
            self._scores = self._score()
            self._ranking = self._ranked(self._scores, MAX_K)
            self._ranked_at = state

    def _ranked(self, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k best rows with a finite score, ties by row."""
        rows = np.flatnonzero(np.isfinite(scores))
        order = rows[np.lexsort((rows, -scores[rows]))][:k]
        return [(self._index.item_id(row), float(scores[row])) for row in order]

    def _score(self) -> np.ndarray:
        """Every row's interaction count; -inf for dead rows."""
        live = self._index.live_mask()
        scores = np.zeros(len(live))
        scores[: len(self._base)] = self._base
        added = np.flatnonzero(live[len(self._base) :]) + len(self._base)
        bundle_rows = np.array(self._bundle_ids.rows([self._index.item_id(row) for row in added.tolist()]),
                               dtype=np.int64)
        replaced = bundle_rows >= 0  # a replaced catalog item keeps its popularity
        scores[added[replaced]] = self._base[bundle_rows[replaced]]
        item_ids = list(self._extra)
        rows = np.array(self._index.live_rows(item_ids), dtype=np.int64)
        counts = np.array([self._extra[item_id] for item_id in item_ids], dtype=np.float64)
        np.add.at(scores, rows[rows >= 0], counts[rows >= 0])
        scores[~live] = -np.inf
        return scores
