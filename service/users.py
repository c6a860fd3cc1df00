"""Users' live state: bundle vectors plus interactions recorded since, by a fold-in rule.

The fold-in rule (`cliper/foldin.py`, named by `rule`, default `DEFAULT_FOLD_IN_RULE`) turns a
user's bundle vector and the vectors of the items they interacted with since the bundle into
their current vector. The default, `mean`: a bundle user with trained vector `u0` and `n0`
training interactions (at least 1) who then interacts with items whose vectors are `v_1..v_n`
gets

    u = (n0 * u0 + v_1 + ... + v_n) / (n0 + n)

i.e. the trained vector counts as `n0` interactions and each new item as one. A user the bundle
does not know (n0 = 0) gets the mean of the vectors of the items they interacted with, so a
brand-new user is personalised from their first interaction on. Each interaction is kept with the
item's vector at that moment and folded into running sums in log order, so the rule replays
exactly after a restart. A user with neither a bundle vector nor interactions gets the
popularity ranking, flagged as a fallback.

The bundle's users are looked up in its memory-mapped `IdMap` (`cliper.ids`), their vectors and
seen items read from its memory-mapped arrays: a start-up builds nothing per user, which at 10^7
users would take minutes and gigabytes in every worker (the map remembers the rows of the users
it was last asked for: a request looks its user up several times).
"""

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from cliper.bundle import LoadedBundle
from cliper.foldin import DEFAULT_FOLD_IN_RULE, FoldInStats, Prior, fold_in_rule
from cliper.ids import IdMap


@dataclass
class Folded:
    """What interactions added to the bundle's users (a snapshot's part, `service.snapshot`):
    per user, the items seen since; and the running fold-in sums of the users with a vector, one
    row per user of `stats_users` (stacked: one array copy, not one per user)."""

    seen: dict[str, list[str]]
    stats_users: list[str]
    counts: np.ndarray  # (n,) int64
    totals: np.ndarray  # (n, K) float64
    grams: np.ndarray | None  # (n, K, K) float64, for rules that keep a Gram matrix

    def stats(self) -> dict[str, FoldInStats]:
        grams = [None] * len(self.stats_users) if self.grams is None else self.grams
        return {user: FoldInStats(int(count), total.copy(), None if gram is None else gram.copy())
                for user, count, total, gram in zip(self.stats_users, self.counts, self.totals, grams, strict=True)}


class UserState:
    """Bundle users plus what interactions added since: seen items and fold-in sums."""

    def __init__(self, bundle: LoadedBundle, rule: str = DEFAULT_FOLD_IN_RULE, folded: Folded | None = None) -> None:
        """`folded`: where interactions had brought the users (`folded()` of an earlier run)."""
        self.rule = rule
        self._ids = IdMap.of(bundle.user_ids)
        self.dim = bundle.manifest.dims.item
        self._rule = fold_in_rule(rule)
        self._vectors = bundle.user_vectors
        self._item_vectors = bundle.item_vectors
        self._seen = bundle.seen
        self._bundle_item_ids = IdMap.of(bundle.item_ids)
        self._new_seen: dict[str, list[str]] = {} if folded is None else folded.seen
        self._stats: dict[str, FoldInStats] = {} if folded is None else folded.stats()

    def folded(self) -> Folded:
        """A copy of what interactions added since the bundle."""
        users = list(self._stats)
        stats = [self._stats[user] for user in users]
        totals = np.stack([s.total for s in stats]) if stats else np.zeros((0, self.dim))
        grams = None
        if self._rule.needs_gram:
            grams = np.stack([s.gram for s in stats]) if stats else np.zeros((0, self.dim, self.dim))
        return Folded({user: list(items) for user, items in self._new_seen.items()}, users,
                      np.array([s.count for s in stats], dtype=np.int64), totals, grams)

    def some(self, limit: int) -> list[str]:
        """Up to `limit` known users: the bundle's first, then those folded in since."""
        users = list(itertools.islice(self._ids, limit))
        return users + [user for user in itertools.islice(self._stats, limit) if self._ids.row(user) is None][
            : limit - len(users)]

    def known(self, user_id: str) -> bool:
        """Whether the user has a vector (from the bundle or folded in)."""
        return user_id in self._stats or self._ids.row(user_id) is not None

    def generation(self, user_id: str) -> int:
        """How many interactions the user has had since the bundle (part of the cache key)."""
        return len(self._new_seen.get(user_id, ()))

    def vector(self, user_id: str) -> np.ndarray:
        """The user's vector by the fold-in rule (module docstring); the user must be `known`."""
        row = self._ids.row(user_id)
        stats = self._stats.get(user_id)
        if stats is None:
            return self._vectors[row]
        prior = None if row is None else Prior(self._vectors[row], self._item_vectors[self._seen.items_of(row)])
        return self._rule(prior, stats)

    def seen_item_ids(self, user_id: str) -> Iterator[str]:
        row = self._ids.row(user_id)
        if row is not None:
            yield from self._bundle_item_ids.ids_of(self._seen.items_of(row))
        yield from self._new_seen.get(user_id, ())

    def record(self, user_id: str, item_ids: Sequence[str], vectors: np.ndarray | None) -> None:
        """Add interactions: always seen; folded in when their item vectors are given."""
        self._new_seen.setdefault(user_id, []).extend(item_ids)
        if vectors is not None and len(vectors):
            if user_id not in self._stats:
                self._stats[user_id] = self._rule.new_stats(self.dim)
            self._stats[user_id].add(vectors)
