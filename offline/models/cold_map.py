"""The cold-start map of multi-modal backbones: a new item's vector from its content alone.

A warm item's vector has a half learned from interactions (the backbone's `id_part`: an ID
embedding, possibly propagated) that a new item lacks. `fit` estimates it from content and
puts the estimate on the warm items' score scale, in three steps:

1. The ID half is estimated by a ridge regression from the item's content (the backbone's
   modalities with weighted views side by side, `ContentEncoder.map_input`). Its strength is
   chosen among the candidate ridges by k-fold cross-validation over the warm items: each
   fold's items get their content-only vectors from a map fitted on the other folds (anything
   learned from their own interactions left out, the backbone's `held_out_vectors`), and the
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


def ridge_regression(x: Tensor, y: Tensor, strength: float) -> tuple[Tensor, Tensor]:
    """`(weight, bias)` minimising |x W + b - y|^2 + penalty |W|^2, with penalty = `strength`
    times the mean centred feature energy (so it does not depend on the features' scale).
    Solved in float64, in the dual form when there are fewer rows than features."""
    x, y = x.double(), y.double()
    x_mean, y_mean = x.mean(dim=0), y.mean(dim=0)
    xc, yc = x - x_mean, y - y_mean
    penalty = strength * xc.pow(2).sum(dim=0).mean()
    rows, features = xc.shape
    if rows < features:
        gram = xc @ xc.T + penalty * torch.eye(rows, dtype=xc.dtype, device=xc.device)
        weight = xc.T @ torch.linalg.solve(gram, yc)
    else:
        gram = xc.T @ xc + penalty * torch.eye(features, dtype=xc.dtype, device=xc.device)
        weight = torch.linalg.solve(gram, xc.T @ yc)
    return weight.float(), (y_mean - x_mean @ weight).float()


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


def cross_validate(features: Tensor, target: Tensor, ridge: float, folds: tuple[Tensor, ...]) -> Tensor:
    """Out-of-fold ridge estimates of `target` (rows: the warm items)."""
    estimate = torch.empty_like(target)
    for fold in folds:
        rest = torch.ones(len(target), dtype=torch.bool, device=target.device)
        rest[fold] = False
        weight, bias = ridge_regression(features[rest], target[rest], ridge)
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
    best: tuple[float, float, Tensor] | None = None
    for ridge in ridges:
        held_out = held_out_vectors(cross_validate(features, target, ridge, folds))
        recall = fold_recall(ranked_users, held_out, ranked_targets, folds)
        if best is None or recall > best[0]:
            best = (recall, ridge, held_out)
    _, ridge, held_out = best
    weight, bias = ridge_regression(features, target, ridge)
    scale = centred_score_norm(users, trained) / centred_score_norm(users, held_out)
    return ColdMap(weight, bias, trained.mean(dim=0), scale, ridge)
