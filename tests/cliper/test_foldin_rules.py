"""cliper.foldin: the mean rule by hand, the least-squares rule's optimality and limits, the state."""

import numpy as np
import pytest

from cliper.foldin import (
    DEFAULT_FOLD_IN_RULE,
    FOLD_IN_RULES,
    FoldInStats,
    Prior,
    fold_in_rule,
    least_squares,
    least_squares_rule,
    mean,
)


def stats_of(vectors: list[list[float]], gram: bool = True) -> FoldInStats:
    stats = FoldInStats.empty(len(vectors[0]), gram=gram)
    stats.add(np.array(vectors, dtype=np.float32))
    return stats


def test_mean_for_a_bundle_user_by_hand() -> None:
    prior = Prior(np.array([1.0, 0.0], np.float32), np.array([[1.0, 1.0], [0.0, 2.0]], np.float32))
    # (2 * [1, 0] + [0, 3] + [3, 0]) / (2 + 2)
    np.testing.assert_allclose(mean(prior, stats_of([[0, 3], [3, 0]])), [1.25, 0.75])


def test_mean_counts_a_bundle_user_without_training_items_as_one() -> None:
    prior = Prior(np.array([4.0, 0.0], np.float32), np.zeros((0, 2), np.float32))
    np.testing.assert_allclose(mean(prior, stats_of([[0, 2]])), [2.0, 1.0])  # ([4, 0] + [0, 2]) / 2


def test_mean_for_an_unknown_user_is_the_items_mean() -> None:
    vector = mean(None, stats_of([[1, 2], [3, 4]], gram=False))
    assert vector.dtype == np.float32
    np.testing.assert_allclose(vector, [2.0, 3.0])


def test_stats_depend_on_the_order_of_rows_not_on_their_grouping() -> None:
    vectors = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    at_once, one_by_one = FoldInStats.empty(5, gram=True), FoldInStats.empty(5, gram=True)
    at_once.add(vectors)
    for row in vectors:
        one_by_one.add(row[None, :])
    assert at_once.count == one_by_one.count == 7
    assert np.array_equal(at_once.total, one_by_one.total) and np.array_equal(at_once.gram, one_by_one.gram)
    np.testing.assert_allclose(at_once.gram, vectors.T.astype(np.float64) @ vectors, rtol=1e-12)


def test_prior_target_is_the_rms_training_score() -> None:
    prior = Prior(np.array([1.0, 0.0], np.float32), np.array([[2.0, 5.0], [0.0, 1.0]], np.float32))
    assert prior.target == pytest.approx(np.sqrt(2.0))  # scores 2 and 0
    assert Prior(prior.vector, np.zeros((0, 2), np.float32)).target == 1.0


def test_least_squares_for_one_new_item_of_an_unknown_user_by_hand() -> None:
    # lam = 1 * 1 * |v|^2 = 25; u = v / (|v|^2 + lam) = [3, 4] / 50
    np.testing.assert_allclose(least_squares(None, stats_of([[3, 4]])), [0.06, 0.08], rtol=1e-6)


@pytest.fixture
def problem() -> tuple[Prior, np.ndarray]:
    rng = np.random.default_rng(1)
    prior = Prior(rng.normal(size=6).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32))
    return prior, rng.normal(size=(3, 6)).astype(np.float32)


@pytest.mark.parametrize("strength", [0.1, 1.0, 10.0])
def test_least_squares_satisfies_its_normal_equations(problem: tuple[Prior, np.ndarray], strength: float) -> None:
    prior, items = problem
    u = least_squares(prior, stats_of(items.tolist()), strength).astype(np.float64)
    v, u0, t = items.astype(np.float64), prior.vector.astype(np.float64), prior.target
    lam = strength * prior.count * np.mean(np.sum(v**2, axis=1))
    gradient = -2 * v.T @ (t - v @ u) + 2 * lam * (u - u0)
    scale = 2 * np.abs(v.T @ (t - v @ u0)).max()  # the gradient at u0
    assert np.abs(gradient).max() < 1e-5 * scale


def test_least_squares_with_a_strong_prior_keeps_the_trained_vector(problem: tuple[Prior, np.ndarray]) -> None:
    prior, items = problem
    np.testing.assert_allclose(least_squares(prior, stats_of(items.tolist()), 1e9), prior.vector, atol=1e-6)


def test_least_squares_with_a_weak_prior_fits_the_targets(problem: tuple[Prior, np.ndarray]) -> None:
    prior, items = problem  # 3 items in 6 dimensions: an exact fit exists
    u = least_squares(prior, stats_of(items.tolist()), 1e-9)
    np.testing.assert_allclose(items @ u, np.full(3, prior.target), rtol=1e-4)
    np.testing.assert_allclose(items @ least_squares(None, stats_of(items.tolist()), 1e-9), np.ones(3), rtol=1e-4)


def test_least_squares_for_an_unknown_user_with_a_strong_prior_points_to_the_items_mean() -> None:
    items = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
    u = least_squares(None, stats_of(items.tolist()), 1e6)
    direction = items.mean(axis=0)
    assert u @ direction / np.linalg.norm(u) / np.linalg.norm(direction) == pytest.approx(1.0, abs=1e-6)


def test_least_squares_needs_the_gram_matrix() -> None:
    with pytest.raises(ValueError, match="Gram"):
        least_squares(None, stats_of([[1, 0]], gram=False))


def test_rules_by_name() -> None:
    assert DEFAULT_FOLD_IN_RULE == "mean"
    assert fold_in_rule("mean").needs_gram is False and fold_in_rule("least_squares").needs_gram is True
    assert set(FOLD_IN_RULES) == {"mean", "least_squares"}
    rule = fold_in_rule("least_squares")
    stats = rule.new_stats(3)
    stats.add(np.array([[1.0, 2.0, 2.0]]))
    np.testing.assert_allclose(rule(None, stats), np.array([1.0, 2.0, 2.0]) / 18)  # |v|^2 = 9, lam = 9
    with pytest.raises(ValueError, match="unknown fold-in rule 'nope'"):
        fold_in_rule("nope")
    with pytest.raises(ValueError, match="> 0"):
        least_squares_rule(0.0)
