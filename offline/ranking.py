"""Full ranking by inner product, bounded in memory, with MMRec's top-K metrics: each user's
items as a sorted CSR (`UserItems`), the metrics from a hit matrix (`ranking_metrics`), and
the ranking itself (`evaluate_ranking`), scoring users in batches whose users x items scores
stay within a fixed number of bytes whatever the catalog's size. Shared by the evaluation
(offline/train/evaluate.py) and the cold map's fit (offline/models/cold_map.py)."""

import numpy as np
import torch
from torch import Tensor

KS = (5, 10, 20, 50)
METRICS = ("recall", "ndcg", "precision", "map")
PAIR_KEY = 2**32  # a (user, item) pair's sort key: user * PAIR_KEY + item
SCORE_BYTES = 256 * 2**20  # the most one batch's score matrix may take


def user_batch_size(n_items: int, batch_size: int, bytes_per_score: int = 4, score_bytes: int = SCORE_BYTES) -> int:
    """Users per batch: at most `batch_size`, and few enough that their scores over `n_items`
    fit in `score_bytes` (291 users over 230,330 items in 256 MiB of float32)."""
    return max(1, min(batch_size, score_bytes // (bytes_per_score * max(n_items, 1))))


class UserItems:
    """Each user's items (CSR over users), from `(n, 2)` `[user, item]` pairs."""

    def __init__(self, pairs: np.ndarray, n_users: int):
        pairs = np.unique(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=0)
        self.n_users = n_users
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(pairs[:, 0], minlength=n_users))])
        self.indices = pairs[:, 1]
        self.keys = pairs[:, 0] * PAIR_KEY + pairs[:, 1]  # sorted: the pairs are, by user then item

    @property
    def items(self) -> np.ndarray:
        return self.indices

    def users(self) -> np.ndarray:
        """Users with at least one item."""
        return np.flatnonzero(np.diff(self.indptr))

    def counts(self, users: np.ndarray) -> np.ndarray:
        return self.indptr[users + 1] - self.indptr[users]

    def coordinates(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(rows, items)`: every item of `users[row]`, with the row (a position in `users`)."""
        counts = self.counts(users)
        rows = np.repeat(np.arange(len(users)), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.indices[np.repeat(self.indptr[users], counts) + offsets]

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Booleans shaped like `items (B, k)`: whether `users[b]` has `items[b, j]`."""
        keys = users.reshape(-1, 1) * PAIR_KEY + items
        if len(self.keys) == 0:
            return np.zeros(keys.shape, dtype=bool)
        found = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[found] == keys


def ranking_metrics(hits: np.ndarray, n_targets: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """MMRec's top-K metrics, averaged over users, from `hits (U, max(ks))` (rank order)."""
    hits = np.asarray(hits, dtype=np.float64)
    n_targets = np.asarray(n_targets, dtype=np.float64)
    ranks = np.arange(1, hits.shape[1] + 1)
    discount = 1.0 / np.log2(ranks + 1)
    cumulative_hits = hits.cumsum(axis=1)
    dcg = (hits * discount).cumsum(axis=1)
    ideal = discount.cumsum()
    average_precision = (cumulative_hits / ranks * hits).cumsum(axis=1)
    results: dict[str, float] = {}
    for k in ks:
        relevant = np.minimum(n_targets, k)
        values = {
            "recall": cumulative_hits[:, k - 1] / n_targets,
            "ndcg": dcg[:, k - 1] / ideal[relevant.astype(np.int64) - 1],
            "precision": cumulative_hits[:, k - 1] / k,
            "map": average_precision[:, k - 1] / relevant,
        }
        for metric in METRICS:
            results[f"{metric}@{k}"] = float(values[metric].mean())
    return results


@torch.no_grad()
def evaluate_ranking(
    user_vectors: Tensor,
    item_vectors: Tensor,
    targets: UserItems,
    exclude: UserItems,
    candidates: Tensor | None = None,
    ks: tuple[int, ...] = KS,
    batch_size: int = 4096,
    score_bytes: int = SCORE_BYTES,
) -> dict[str, float]:
    """Rank items by `user . item` for every user with targets; `exclude` items and items
    outside `candidates` (a boolean `(n_items,)` mask) are never recommended.

    Only the candidates are scored, for batches of users whose score matrix fits in
    `score_bytes` (`user_batch_size`); excluded items are set to -inf at their coordinates and
    hits looked up in the targets' sorted pairs, so no other users x items array is built and
    memory stays bounded however many users and items there are.
    """
    n_items = item_vectors.shape[0]
    device = item_vectors.device
    ids = torch.arange(n_items, device=device) if candidates is None else torch.nonzero(candidates.to(device))[:, 0]
    column = torch.full((n_items,), -1, dtype=torch.long, device=device)  # item -> its column among candidates
    column[ids] = torch.arange(len(ids), device=device)
    items = item_vectors if candidates is None else item_vectors[ids]
    users = targets.users()
    k_max = max(ks)
    k_top = min(k_max, len(ids))
    step = user_batch_size(len(ids), batch_size, items.element_size(), score_bytes)
    batches = []
    for start in range(0, len(users), step):
        batch = users[start : start + step]
        scores = user_vectors[torch.from_numpy(batch).to(device)] @ items.T
        rows, seen = (torch.from_numpy(array).to(device) for array in exclude.coordinates(batch))
        columns = column[seen]
        kept = columns >= 0
        scores[rows[kept], columns[kept]] = -torch.inf
        top = torch.topk(scores, k_top, dim=1)
        del scores  # before the next batch's scores are allocated: one batch alive at a time
        ranked = ids[top.indices].cpu().numpy()
        batches.append(targets.contains(batch, ranked) & torch.isfinite(top.values).cpu().numpy())
    hits = np.concatenate(batches) if batches else np.zeros((0, k_top), dtype=bool)
    hits = np.pad(hits, ((0, 0), (0, k_max - k_top)))
    return ranking_metrics(hits, targets.counts(users), ks)
