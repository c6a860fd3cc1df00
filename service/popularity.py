"""Item popularity: bundle interaction counts plus interactions since, over live items."""

from collections import Counter
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from cliper.bundle import LoadedBundle
from service.index import ItemIndex

MAX_K = 1000


class Popularity:
    """Bundle interaction counts plus interactions since, ranked over live items (cached)."""

    def __init__(self, bundle: LoadedBundle, index: ItemIndex, extra: Mapping[str, int] | None = None) -> None:
        """`extra`: interactions per item since the bundle, as `extra()` of an earlier run gave them."""
        self._index = index
        self._base = bundle.popularity.astype(np.float64)
        self._bundle_rows = {item_id: row for row, item_id in enumerate(bundle.item_ids)}
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
        for row in np.flatnonzero(live[len(self._base) :]) + len(self._base):
            bundle_row = self._bundle_rows.get(self._index.item_id(row))
            if bundle_row is not None:  # a replaced catalog item keeps its popularity
                scores[row] = self._base[bundle_row]
        for item_id, count in self._extra.items():
            row = self._index.row_of(item_id)
            if row is not None:
                scores[row] += count
        scores[~live] = -np.inf
        return scores
