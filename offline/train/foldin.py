"""Fold-in, measured (issue 13): does the service's fold-in rule beat the stale user vector?

Protocol. Take every user with at least 2 interactions in the test period, in time order (ties
keep their input order). The first `floor(n / 2)` are folded in, one at a time, with the same
`cliper.foldin` rule and state the service uses; the remaining `ceil(n / 2)` are the targets.
Each user's training items and folded items are excluded from the ranking, and so dropped from
the targets (a user left with no target is not counted). All items are ranked by inner product,
as the service scores. Compared, with MMRec's Recall@K and NDCG@K:

- `stale`: the bundle's vector, unchanged. A user the bundle does not know has none; the service
  serves them popularity, so their `stale` row is the popularity ranking (`notes` says so).
- one row per fold-in rule (`cliper.foldin.FOLD_IN_RULES` by default);
- any `extra` (user, item) vector sets, e.g. a retrain that includes the folded interactions;
- `popularity`: items by the given counts.

Results are reported for warm users (known to the bundle), new users and all, with user counts.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cliper.bundle import Seen
from cliper.foldin import FOLD_IN_RULES, FoldInRule, Prior
from offline.ranking import ranking_metrics

KS = (10, 20, 50)
STALE = "stale"
POPULARITY = "popularity"
NOTES = {
    STALE: "new users (unknown to the bundle) have no stale vector: their stale ranking is popularity, "
           "the service's fallback",
    "split": "per user, the first floor(n/2) test-period interactions are folded in, the rest are targets",
}


@dataclass(frozen=True)
class Cases:
    """The evaluated users and, per user, the folded items (time order), the items excluded from
    the ranking (training + folded) and the targets (later items, not excluded, unique)."""

    users: np.ndarray
    folded: list[np.ndarray]
    excluded: list[np.ndarray]
    targets: list[np.ndarray]


def split_test_period(test: np.ndarray, seen: Seen) -> Cases:
    """Split `test` (`[user, item, timestamp]` rows) into folded and target halves per user;
    users `>= seen.n_users` are unknown to the bundle (no training items)."""
    test = np.asarray(test)
    if test.ndim != 2 or test.shape[1] != 3:
        raise ValueError(f"test: expected (n, 3) [user, item, timestamp] rows, got shape {test.shape}")
    ordered = test[np.lexsort((test[:, 2], test[:, 0]))]  # lexsort is stable
    users, starts, counts = np.unique(ordered[:, 0].astype(np.int64), return_index=True, return_counts=True)
    items = ordered[:, 1].astype(np.int64)
    kept_users, folded, excluded, targets = [], [], [], []
    for user, start, count in zip(users, starts, counts, strict=True):
        if count < 2:
            continue
        half = start + count // 2
        trained = seen.items_of(user) if user < seen.n_users else np.zeros(0, np.int64)
        user_excluded = np.union1d(trained, items[start:half])
        user_targets = np.setdiff1d(items[half : start + count], user_excluded)
        if len(user_targets):
            kept_users.append(user)
            folded.append(items[start:half])
            excluded.append(user_excluded)
            targets.append(user_targets)
    return Cases(np.array(kept_users, dtype=np.int64), folded, excluded, targets)


def fold_in_user(
    rule: FoldInRule, user_vectors: np.ndarray, item_vectors: np.ndarray, seen: Seen, user: int, items: np.ndarray
) -> np.ndarray:
    """The vector `rule` gives `user` after interactions with item rows `items`, in order, as
    `service.users.UserState` computes it; a user `>= len(user_vectors)` is unknown to the bundle."""
    stats = rule.new_stats(item_vectors.shape[1])
    stats.add(item_vectors[items])
    known = user < len(user_vectors)
    return rule(Prior(user_vectors[user], item_vectors[seen.items_of(user)]) if known else None, stats)


def fold_in_protocol(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    seen: Seen,
    test: np.ndarray,
    popularity: np.ndarray,
    rules: Mapping[str, FoldInRule] = FOLD_IN_RULES,
    extra: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ks: tuple[int, ...] = KS,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Run the protocol (module docstring) on a bundle's arrays.

    `user_vectors` (n_users, K) and `seen` (training items per user) follow the bundle's user
    rows, `item_vectors` (n_items, K) and `popularity` (n_items,) its item rows; `test` holds
    `[user, item, timestamp]` rows, users `>= n_users` being unknown to the bundle. `extra` maps
    a name to `(U, V)` ranked as they are (no fold-in): `U` needs a row for every test user (new
    ones included), `V` one per item row. Memory: `batch_size x n_items` float32 scores at once.

    Returns `{"warm" | "new" | "all": {"users": n, method: {"recall@K": ..., "ndcg@K": ...}}}`
    (methods only for groups with users) and `"notes"`.
    """
    extra = dict(extra or {})
    names = [STALE, *rules, *extra, POPULARITY]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    if seen.n_users != len(user_vectors):
        raise ValueError(f"seen describes {seen.n_users} users, user_vectors has {len(user_vectors)} rows")
    cases = split_test_period(test, seen)
    rows = np.concatenate([np.zeros(0, np.int64), *cases.excluded, *cases.targets])
    if len(rows) and (rows.min() < 0 or rows.max() >= len(item_vectors)):
        raise ValueError(f"test: item rows must lie in [0, {len(item_vectors)})")
    warm = cases.users < len(user_vectors)
    rank = _Ranker(cases, max(ks), batch_size)

    popular = rank(np.ones((len(cases.users), 1), np.float32), np.asarray(popularity, np.float32)[:, None])
    hits = {POPULARITY: popular}
    stale = popular.copy()
    stale[warm] = rank(user_vectors[cases.users[warm]], item_vectors, warm)
    hits[STALE] = stale
    for name, rule in rules.items():
        folded = [fold_in_user(rule, user_vectors, item_vectors, seen, user, items)
                  for user, items in zip(cases.users, cases.folded, strict=True)]
        hits[name] = rank(np.stack(folded) if folded else np.zeros((0, item_vectors.shape[1])), item_vectors)
    for name, (users, items) in extra.items():
        if len(items) != len(item_vectors) or (len(cases.users) and cases.users.max() >= len(users)):
            raise ValueError(f"extra {name!r}: expected a row per item ({len(item_vectors)}) and per test user")
        hits[name] = rank(users[cases.users], items)

    n_targets = np.array([len(t) for t in cases.targets])
    report: dict[str, Any] = {"notes": NOTES}
    for group, mask in (("warm", warm), ("new", ~warm), ("all", np.ones_like(warm))):
        report[group] = {"users": int(mask.sum())}
        if mask.any():
            for name in names:
                metrics = ranking_metrics(hits[name][mask], n_targets[mask], ks)
                report[group][name] = {key: value for key, value in metrics.items()
                                       if key.startswith(("recall@", "ndcg@"))}
    return report


class _Ranker:
    """Top-k hits of `queries . items` per case, excluded items masked, scored in batches."""

    def __init__(self, cases: Cases, k: int, batch_size: int) -> None:
        self.cases = cases
        self.k = k
        self.batch_size = batch_size

    def __call__(self, queries: np.ndarray, items: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """`(len(queries), k)` booleans in rank order; `mask` picks the cases `queries` stand for."""
        index = np.arange(len(self.cases.users)) if mask is None else np.flatnonzero(mask)
        queries = np.asarray(queries, np.float32)
        items = np.asarray(items, np.float32)
        k_top = min(self.k, len(items))
        hits = np.zeros((len(index), self.k), dtype=bool)
        for start in range(0, len(index), self.batch_size):
            batch = index[start : start + self.batch_size]
            scores = queries[start : start + len(batch)] @ items.T
            scores[self._cells(self.cases.excluded, batch)] = -np.inf
            top = np.argpartition(-scores, k_top - 1, axis=1)[:, :k_top]
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.lexsort((top, -top_scores), axis=1)  # by score, ties by item row
            top = np.take_along_axis(top, order, axis=1)
            targets = np.zeros_like(scores, dtype=bool)
            targets[self._cells(self.cases.targets, batch)] = True
            rows = np.arange(len(batch))[:, None]
            hits[start : start + len(batch), :k_top] = targets[rows, top] & np.isfinite(scores[rows, top])
        return hits

    @staticmethod
    def _cells(per_case: list[np.ndarray], batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(row, item)` indices of the batch's items, rows numbered within the batch."""
        parts = [per_case[case] for case in batch]
        rows = np.repeat(np.arange(len(batch)), [len(part) for part in parts])
        return rows, np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
