"""Users' live state: bundle vectors plus interactions recorded since, by the fold-in rule.

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

from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np

from cliper.bundle import LoadedBundle


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
