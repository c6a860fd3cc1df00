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
from offline.ranking import KS, UserItems, evaluate_ranking

VALID_METRIC = "recall@20"


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
