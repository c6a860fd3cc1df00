"""Fold-in rules: a user's vector after interactions recorded since the bundle was made.

The service (`service/users.py`) and the offline measurement (`offline/train/foldin.py`) both
call these functions, so what is measured is exactly what is served. A rule maps the user's
`Prior` (trained vector `u0`, with the bundle's vectors of their `n0` training items; None for
a user the bundle does not know) and the running `FoldInStats` of the new item vectors to `u`:

- `mean`: `u = (n0 * u0 + v_1 + ... + v_n) / (n0 + n)`, the trained vector counting as `n0`
  interactions (at least 1) and each new item as one; an unknown user gets the mean of the new
  items' vectors.
- `least_squares` (implicit-ALS style): `u` minimises `sum_i (t - v_i.u)^2 + lam |u - u0|^2`,
  i.e. `u = (V^T V + lam I)^-1 (t V^T 1 + lam u0)`. See `least_squares` for `t` and `lam`.

Rules are chosen by name from `FOLD_IN_RULES` (a bundle manifest could name one later);
`DEFAULT_FOLD_IN_RULE` is what the service uses.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np


@dataclass(frozen=True)
class Prior:
    """What the bundle knows of a user: trained `vector` (K,) and `train_items` (n0, K), the
    bundle's vectors of the user's training items (the ones `vector` was trained against)."""

    vector: np.ndarray
    train_items: np.ndarray

    @property
    def count(self) -> int:
        return len(self.train_items)

    @property
    def target(self) -> float:
        """The root-mean-square score the trained vector gives its training items, or 1.0 when
        there is none to measure (no training items, or all scoring 0)."""
        scores = self.train_items.astype(np.float64) @ self.vector.astype(np.float64)
        rms = float(np.sqrt(np.mean(scores**2))) if len(scores) else 0.0
        return rms if rms > 0 else 1.0


@dataclass
class FoldInStats:
    """Running float64 sums over a user's new item vectors: their count, sum (`V^T 1`) and,
    for rules that need it, Gram matrix (`V^T V`, K x K: 32 KiB per user at K = 64)."""

    count: int
    total: np.ndarray
    gram: np.ndarray | None

    @classmethod
    def empty(cls, dim: int, gram: bool) -> "FoldInStats":
        return cls(0, np.zeros(dim), np.zeros((dim, dim)) if gram else None)

    def add(self, vectors: np.ndarray) -> None:
        """Add item vectors `(n, K)` one row at a time: the sums depend on the rows' order only,
        not on how they are split into calls, so replaying a log gives bitwise the same state."""
        for vector in np.asarray(vectors, dtype=np.float64):
            self.count += 1
            self.total += vector
            if self.gram is not None:
                self.gram += np.outer(vector, vector)


def mean(prior: Prior | None, stats: FoldInStats) -> np.ndarray:
    """The trained vector counted as `n0` interactions, averaged with the new items' vectors."""
    if prior is None:
        return (stats.total / stats.count).astype(np.float32)
    n0 = max(prior.count, 1)
    return ((n0 * prior.vector + stats.total) / (n0 + stats.count)).astype(np.float32)


def least_squares(prior: Prior | None, stats: FoldInStats, strength: float = 1.0) -> np.ndarray:
    """`argmin_u sum_i (t - v_i.u)^2 + lam |u - u0|^2` over the new item vectors `v_i`.

    `lam = strength * n0 * mean_i |v_i|^2`: each new item adds curvature `|v_i|^2` along its
    direction, so the trained vector weighs as much as `strength * n0` new interactions and a
    user with more history moves less, as in `mean`. The target `t` is `prior.target`, the level
    at which `u0` scores the user's own training items: implicit ALS fits positives to 1
    because its vectors are trained to score them near 1, while BPR-trained vectors score them
    at a level of their own, and a target of 1 would pull a high-scoring user *away* from the
    new items. A user the bundle does not know has `u0 = 0`, `n0 = 1`, `t = 1` (the scale of
    `u` does not change a ranking): a strong prior gives the direction of the items' mean (the
    `mean` rule), a weak one the least-squares fit.
    """
    if stats.gram is None:
        raise ValueError("least_squares needs FoldInStats with a Gram matrix (FoldInRule.needs_gram)")
    if prior is None:
        u0, n0, target = np.zeros(len(stats.total)), 1, 1.0
    else:
        u0, n0, target = prior.vector.astype(np.float64), max(prior.count, 1), prior.target
    # All-zero item vectors carry no information: the floor keeps the system solvable (u = u0).
    lam = max(strength * n0 * np.trace(stats.gram) / stats.count, np.finfo(np.float64).tiny)
    system = stats.gram + lam * np.eye(len(stats.total))
    return np.linalg.solve(system, target * stats.total + lam * u0).astype(np.float32)


@dataclass(frozen=True)
class FoldInRule:
    """A fold-in rule and what its running state must hold."""

    fold: Callable[[Prior | None, FoldInStats], np.ndarray]
    needs_gram: bool = False

    def new_stats(self, dim: int) -> FoldInStats:
        return FoldInStats.empty(dim, gram=self.needs_gram)

    def __call__(self, prior: Prior | None, stats: FoldInStats) -> np.ndarray:
        """The user's vector (float32); `stats` must hold at least one interaction."""
        return self.fold(prior, stats)


def least_squares_rule(strength: float = 1.0) -> FoldInRule:
    if strength <= 0:
        raise ValueError(f"least_squares strength must be > 0, got {strength}")
    return FoldInRule(partial(least_squares, strength=strength), needs_gram=True)


FOLD_IN_RULES: dict[str, FoldInRule] = {
    "mean": FoldInRule(mean),
    "least_squares": least_squares_rule(1.0),
}
DEFAULT_FOLD_IN_RULE = "mean"


def fold_in_rule(name: str) -> FoldInRule:
    try:
        return FOLD_IN_RULES[name]
    except KeyError:
        raise ValueError(f"unknown fold-in rule {name!r}; known: {sorted(FOLD_IN_RULES)}") from None
