"""The cold-start map of multi-modal backbones: a new item's vector from its content alone.

A warm item's vector has a half learned from interactions (the backbone's `id_part`: an ID
embedding, possibly propagated) that a new item lacks. `fit` estimates it from content and
puts the estimate on the warm items' score scale, in three steps:

1. The ID half is estimated by a ridge regression from the item's content (the backbone's
   modalities with weighted views side by side, `ContentEncoder.map_input`). Its strength is
   chosen among the candidate ridges by k-fold cross-validation over the warm items: each
   fold's items get their content-only vectors from a map fitted on the other folds (anything
   learned from their own interactions left out, the backbone's `held_out_path`), and the
   strength whose vectors best rank each user's training items among the fold's items wins
   (every user up to `RIDGE_CHOICE_USERS`, a fixed sample above).
   That mirrors the cold-only protocol; squared error would pick the strongest penalty, whose
   estimates barely differ between items.
2. Any such estimate regresses to the mean: over held-out warm items its scores spread 1.0 to
   3.8 times narrower than the trained vectors' scores (ML-100K), so a new item seldom reaches
   a user's top-K among warm items (cold Recall@20 among all items was at or below a random
   order). The content vectors are therefore stretched about the mean warm item vector,
   `v = center + scale * (v_content - center)`, with `scale` the ratio of the per-user-centred
   score spreads of the warm items' trained vectors and of their held-out content vectors.
   Each user's order of the new items is unchanged (an affine map with a positive slope per
   user); only their place among the warm items moves, to where items of the same spread sit,
   instead of always below the user's favourites.
3. The map is refitted on all warm items at the chosen strength.

Unlike a content projection trained by BPR (blind to any per-user constant, so its scores sit
at an arbitrary offset from warm items' scores), the estimate lives on the warm items' own
scale.
"""

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from offline.ranking import SCORE_BYTES, UserItems, evaluate_ranking

COLD_RECALL_AT = 20  # the cut-off of the held-out ranking that picks the ridge strength
RIDGE_CHOICE_USERS = 20_000  # users ranked to choose the ridge; a fixed sample above this many


class ColdMapNotFitted(RuntimeError):
    """A new item's vector was asked of a model whose cold map is not fitted to its weights."""


@dataclass(frozen=True)
class ColdMap:
    """A fitted map: `estimate = features @ weight + bias`, then `center + scale * (v - center)`."""

    weight: Tensor
    bias: Tensor
    center: Tensor
    scale: Tensor
    ridge: float


STATISTICS_ROWS = 65_536  # rows per step of the ridge statistics (bounds their float64 copies)


@dataclass(frozen=True)
class RidgeStatistics:
    """What a ridge regression needs of its rows, in float64: their count, sums and the cross
    products `X^T X`, `X^T Y` of `X - shift` (a fixed row near the mean, so the centring below
    does not cancel digits). Statistics of disjoint rows add, so every fold's complement and the
    whole set come from one pass over the rows, and each candidate strength costs only a
    features x features solve."""

    rows: int
    shift: Tensor
    x_sum: Tensor
    y_sum: Tensor
    xx: Tensor
    xy: Tensor

    @classmethod
    def of(cls, x: Tensor, y: Tensor, shift: Tensor, chunk: int = STATISTICS_ROWS) -> "RidgeStatistics":
        shift = shift.double()
        xx = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
        xy = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, device=x.device)
        x_sum = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        y_sum = torch.zeros(y.shape[1], dtype=torch.float64, device=x.device)
        for start in range(0, len(x), chunk):
            xs, ys = x[start : start + chunk].double() - shift, y[start : start + chunk].double()
            xx += xs.T @ xs
            xy += xs.T @ ys
            x_sum += xs.sum(dim=0)
            y_sum += ys.sum(dim=0)
        return cls(len(x), shift, x_sum, y_sum, xx, xy)

    def _combined(self, other: "RidgeStatistics", op: Callable) -> "RidgeStatistics":
        """Statistics of the rows of both (`operator.add`) or of these without `other`'s (`sub`)."""
        sums = (op(getattr(self, name), getattr(other, name)) for name in ("rows", "x_sum", "y_sum", "xx", "xy"))
        rows, x_sum, y_sum, xx, xy = sums
        return RidgeStatistics(rows, self.shift, x_sum, y_sum, xx, xy)

    def __add__(self, other: "RidgeStatistics") -> "RidgeStatistics":
        return self._combined(other, operator.add)

    def __sub__(self, other: "RidgeStatistics") -> "RidgeStatistics":
        return self._combined(other, operator.sub)

    def solve(self, strength: float) -> tuple[Tensor, Tensor]:
        """`(weight, bias)` minimising |x W + b - y|^2 + penalty |W|^2 over these rows, with
        penalty = `strength` times the mean centred feature energy (so it does not depend on the
        features' scale)."""
        x_mean, y_mean = self.x_sum / self.rows, self.y_sum / self.rows
        centred_xx = self.xx - self.rows * torch.outer(x_mean, x_mean)
        centred_xy = self.xy - self.rows * torch.outer(x_mean, y_mean)
        penalty = strength * centred_xx.diagonal().mean()
        eye = torch.eye(len(centred_xx), dtype=centred_xx.dtype, device=centred_xx.device)
        weight = torch.linalg.solve(centred_xx + penalty * eye, centred_xy)
        return weight.float(), (y_mean - (x_mean + self.shift) @ weight).float()


def fold_statistics(
    x: Tensor, y: Tensor, folds: tuple[Tensor, ...], chunk: int = STATISTICS_ROWS
) -> list[RidgeStatistics]:
    """The ridge statistics of each fold's rows, all shifted by the mean of `x`'s first rows."""
    shift = x[:chunk].double().mean(dim=0)
    return [RidgeStatistics.of(x[fold], y[fold], shift, chunk) for fold in folds]


def all_rows(statistics: list[RidgeStatistics]) -> RidgeStatistics:
    """The statistics of the union of disjoint rows."""
    return functools.reduce(operator.add, statistics)


def centred_score_norm(users: Tensor, items: Tensor) -> Tensor:
    """Frobenius norm of the score matrix `users @ items.T` with each user's mean score removed,
    without forming it: with the items centred on their mean, `|U Ic^T|^2 = trace(U^T U Ic^T Ic)`
    (two K x K Gram matrices, in float64), so it costs O((users + items) K^2)."""
    users, items = users.double(), items.double()
    centred = items - items.mean(dim=0)
    squared = ((users.T @ users) * (centred.T @ centred)).sum()
    return squared.clamp(min=0).sqrt().float()


def warm_folds(n_warm: int, n_folds: int, device: torch.device | str = "cpu") -> tuple[Tensor, ...]:
    """A fixed partition of the warm items' rows (positions among the warm items) into folds."""
    order = torch.randperm(n_warm, generator=torch.Generator().manual_seed(0))
    return order.to(device).chunk(n_folds)


def cross_validate(features: Tensor, statistics: list[RidgeStatistics], ridge: float,
                   folds: tuple[Tensor, ...]) -> Tensor:
    """Out-of-fold ridge estimates of the target (rows: the warm items), each fold's from a map
    fitted on the other folds (`statistics`: `fold_statistics` of the same folds)."""
    total = all_rows(statistics)
    estimate = torch.empty(len(features), total.xy.shape[1], device=features.device)
    for fold, own in zip(folds, statistics, strict=True):
        weight, bias = (total - own).solve(ridge)
        estimate[fold] = features[fold] @ weight + bias
    return estimate


def ridge_choice_users(n_users: int, max_users: int = RIDGE_CHOICE_USERS) -> np.ndarray:
    """The sorted user rows whose held-out recall chooses the ridge: every user up to
    `max_users`, else a fixed random sample of that many. The recall only compares candidate
    ridges, and ranking every user 6 ridges x 5 folds times took about 50 minutes at 10x
    Amazon-Clothing's shape (393,870 users) on one thread."""
    if n_users <= max_users:
        return np.arange(n_users)
    return np.sort(np.random.default_rng(0).permutation(n_users)[:max_users])


def warm_pairs(n_items: int, warm_items: Tensor, edges: Tensor) -> np.ndarray:
    """The training edges (`[user, item]` rows) into warm items, as `[user, warm position]` rows
    (a users x warm items matrix would not fit at a shop's scale: 90 GB of booleans at 10x
    Amazon-Clothing's shape)."""
    row = np.full(n_items, -1, dtype=np.int64)
    row[warm_items.cpu().numpy()] = np.arange(len(warm_items))
    edges = edges.cpu().numpy()
    positions = row[edges[:, 1]]
    keep = positions >= 0
    return np.stack([edges[keep, 0], positions[keep]], axis=1)


def pairs_of_users(pairs: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """The rows of `pairs` whose user is in `sample` (sorted), users renumbered 0..len(sample)-1."""
    place = np.minimum(np.searchsorted(sample, pairs[:, 0]), len(sample) - 1)
    inside = sample[place] == pairs[:, 0]
    return np.stack([place[inside], pairs[inside, 1]], axis=1)


def fold_recall(
    users: Tensor, vectors: Tensor, pairs: np.ndarray, folds: tuple[Tensor, ...], score_bytes: int = SCORE_BYTES
) -> float:
    """Recall@20 of each user's training items (`pairs`, from `warm_pairs`) among the items of
    their fold (`vectors`: one row per warm item), averaged over the users with such an item
    (`evaluate_ranking`, in batches within `score_bytes`) and then over folds: the cold-only
    protocol on warm items."""
    nothing = UserItems(np.zeros((0, 2), dtype=np.int64), len(users))
    recalls = []
    for fold in folds:
        column = np.full(len(vectors), -1, dtype=np.int64)
        column[fold.cpu().numpy()] = np.arange(len(fold))
        columns = column[pairs[:, 1]]
        inside = columns >= 0
        targets = UserItems(np.stack([pairs[inside, 0], columns[inside]], axis=1), len(users))
        metrics = evaluate_ranking(users, vectors[fold], targets, nothing, ks=(COLD_RECALL_AT,),
                                   batch_size=len(users), score_bytes=score_bytes)
        recalls.append(metrics[f"recall@{COLD_RECALL_AT}"])
    return sum(recalls) / len(recalls)


@torch.no_grad()
def fit(
    features: Tensor,
    target: Tensor,
    users: Tensor,
    targets: np.ndarray,
    trained: Tensor,
    held_out_vectors: Callable[[Tensor], Tensor],
    ridges: list[float],
    n_folds: int,
) -> ColdMap:
    """Fit the map on the warm items (module docstring).

    `features`: the warm items' map input; `target`: their `id_part`; `users`: every user's
    vector; `targets`: `warm_pairs`; `trained`: the warm items' trained vectors;
    `held_out_vectors`: out-of-fold `id_part` estimates -> the warm items' content-path vectors.
    """
    folds = warm_folds(len(target), n_folds, target.device)
    ranked = ridge_choice_users(len(users))
    ranked_users, ranked_targets = users[torch.from_numpy(ranked).to(users.device)], pairs_of_users(targets, ranked)
    statistics = fold_statistics(features, target, folds)
    best: tuple[float, float, Tensor] | None = None
    for ridge in ridges:
        held_out = held_out_vectors(cross_validate(features, statistics, ridge, folds))
        recall = fold_recall(ranked_users, held_out, ranked_targets, folds)
        if best is None or recall > best[0]:
            best = (recall, ridge, held_out)
    _, ridge, held_out = best
    weight, bias = all_rows(statistics).solve(ridge)
    scale = centred_score_norm(users, trained) / centred_score_norm(users, held_out)
    return ColdMap(weight, bias, trained.mean(dim=0), scale, ridge)
