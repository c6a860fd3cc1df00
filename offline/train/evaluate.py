"""Full-ranking evaluation with MMRec's metrics, the cold-start protocol, and a popularity baseline.

What MMRec does (enoche/MMRec, `src/utils/dataloader.py` `EvalDataLoader` and
`src/common/trainer.py` `Trainer.evaluate`): both the valid and the test loader are built with
`additional_dataset=train_dataset`, and `evaluate` sets the scores of those training positives
to -1e10 before `topk`. So validation masks training positives, and testing masks training
positives only (validation positives stay candidates). Metrics are averaged over the users who
have at least one target (`src/utils/metrics.py`): recall@K = hits / |targets|;
NDCG@K with binary relevance and the ideal DCG over min(|targets|, K) positions;
precision@K = hits / K; MAP@K = sum_k P(k) rel(k) / min(|targets|, K).

We do the same, with additions for held-out cold (new) items and new users: warm validation
and test rank the warm items only (cold items are never targets there, and ID-only models
cannot score them). The cold protocol ranks each user's cold-test items (a) among all items,
training positives masked, and (b) among the cold items only; cold item vectors come from the
content path. `all_items` ranks each user's test and cold-test items together among all items,
as the service would. New users (a temporal split's users with no training interaction) have
no model vector: like the service, we rank all items by training popularity for them.
All scores are inner products of user and item vectors, exactly as the service scores.
"""

from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from offline.models.base import Recommender, SplitLike
from offline.score_batches import SCORE_BYTES, user_batch_size

KS = (5, 10, 20, 50)
METRICS = ("recall", "ndcg", "precision", "map")
VALID_METRIC = "recall@20"
PAIR_KEY = 2**32  # a (user, item) pair's sort key: user * PAIR_KEY + item


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


class EvalSplit(SplitLike, Protocol):
    """The parts of a split the evaluator needs (a `SplitData` fits)."""

    valid: np.ndarray
    test: np.ndarray
    cold_test: np.ndarray
    new_user_ids: list[str]
    new_user_test: np.ndarray


class Evaluator:
    """Valid / test / cold evaluation of user and item vectors on one split."""

    def __init__(self, split: EvalSplit, ks: tuple[int, ...] = KS, batch_size: int = 4096):
        self.n_items = split.n_items
        self.ks = ks
        self.batch_size = batch_size
        self.train = UserItems(split.train, split.n_users)
        self.valid = UserItems(split.valid, split.n_users)
        self.test = UserItems(split.test, split.n_users)
        self.cold_test = UserItems(split.cold_test, split.n_users)
        self.all_test = UserItems(np.concatenate([split.test, split.cold_test]), split.n_users)
        self.new_user_test = UserItems(split.new_user_test, len(split.new_user_ids))
        self.popularity = popularity_vectors(len(split.new_user_ids), split.n_items, split.train)
        self.cold = np.zeros(split.n_items, dtype=bool)
        self.cold[np.asarray(split.cold_items, dtype=np.int64)] = True
        for name, part in (("valid", self.valid), ("test", self.test)):
            if len(part.items) == 0:
                raise ValueError(f"the split has no {name} interactions to evaluate (are users' histories too short?)")
            if self.cold[part.items].any():
                raise ValueError(f"the {name} interactions contain cold items; they belong in cold_test")
        if len(self.cold_test.items) and not self.cold[self.cold_test.items].all():
            raise ValueError("cold_test contains warm items")

    def _rank(self, vectors: tuple[Tensor, Tensor], targets: UserItems, candidates: np.ndarray) -> dict[str, float]:
        users, items = vectors
        mask = torch.from_numpy(candidates).to(items.device)
        return evaluate_ranking(users, items, targets, self.train, mask, self.ks, self.batch_size)

    def evaluate_valid(self, vectors: tuple[Tensor, Tensor]) -> dict[str, float]:
        return self._rank(vectors, self.valid, ~self.cold)

    def evaluate_test(self, vectors: tuple[Tensor, Tensor]) -> dict[str, float]:
        return self._rank(vectors, self.test, ~self.cold)

    def evaluate_cold(self, vectors: tuple[Tensor, Tensor]) -> dict[str, dict[str, float]] | None:
        """`all`: cold targets among every item; `cold_only`: among the cold items. None
        when the split has no cold interactions."""
        if len(self.cold_test.items) == 0:
            return None
        return {
            "all": self._rank(vectors, self.cold_test, np.ones(self.n_items, dtype=bool)),
            "cold_only": self._rank(vectors, self.cold_test, self.cold),
        }

    def evaluate_all_items(self, vectors: tuple[Tensor, Tensor]) -> dict[str, float]:
        """Each user's test and cold-test items together, among every item."""
        return self._rank(vectors, self.all_test, np.ones(self.n_items, dtype=bool))

    def evaluate_new_users(self) -> dict[str, float] | None:
        """Popularity (the service's fallback) for users with no training interaction, among
        every item; None when the split has none."""
        if len(self.new_user_test.items) == 0:
            return None
        nothing_seen = UserItems(np.zeros((0, 2), dtype=np.int64), self.new_user_test.n_users)
        candidates = torch.ones(self.n_items, dtype=torch.bool)
        return evaluate_ranking(*self.popularity, self.new_user_test, nothing_seen, candidates, self.ks, self.batch_size)


@torch.no_grad()
def model_vectors(model: Recommender) -> tuple[Tensor, Tensor]:
    """`(user_vectors, item_vectors)` of a model in eval mode (cold rows from content)."""
    model.eval()
    return model.user_vectors(), model.item_vectors()


@torch.no_grad()
def warm_vectors(model: Recommender) -> tuple[Tensor, Tensor]:
    """`(user_vectors, trained item vectors)` for rankings of warm items only (validation).

    Cold items are left out: validation never ranks them, and a content model's cold-start map
    (cross-validated, about a second) is fitted once, after training (`fit_cold_map`). Scores
    do not depend on the mode (no backbone has dropout layers at scoring time).
    """
    return model.user_vectors(), model.trained_item_vectors()


def popularity_vectors(n_users: int, n_items: int, train: np.ndarray) -> tuple[Tensor, Tensor]:
    """The popularity baseline as vectors: every user is `[1]`, every item its training count."""
    counts = np.bincount(np.asarray(train, dtype=np.int64)[:, 1], minlength=n_items)
    return torch.ones(n_users, 1), torch.from_numpy(counts.astype(np.float32)).unsqueeze(1)
