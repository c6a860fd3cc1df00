"""offline.train.foldin: the fold-in protocol on worlds whose answers are known by construction."""

from types import SimpleNamespace

import numpy as np
import pytest

from cliper.bundle import Seen
from cliper.foldin import FOLD_IN_RULES
from offline.train.foldin import fold_in_protocol, fold_in_user, split_test_period
from service.users import UserState

N_USERS = 4
CLUSTER_A = range(30)  # items 0..29 along the first axis
CLUSTER_B = range(30, 40)  # items 30..39 along the second


def two_clusters() -> tuple[np.ndarray, np.ndarray, Seen, np.ndarray]:
    """Users all point to cluster A; popularity is 100 - item row (item 0 the most popular)."""
    steps = 0.001 * np.arange(40)  # no two items tie
    items = np.zeros((40, 2), np.float32)
    items[CLUSTER_A] = np.stack([np.ones(30), steps[:30]], axis=1)
    items[CLUSTER_B] = np.stack([steps[30:], np.ones(10)], axis=1)
    users = np.tile(np.array([[1.0, 0.0]], np.float32), (N_USERS, 1))
    seen = Seen.from_pairs(np.array([[0, 0], [0, 1], [1, 2], [2, 3], [3, 4]]), N_USERS)
    return users, items, seen, (100 - np.arange(40)).astype(np.float32)


def dcg(ranks: list[int]) -> float:
    return sum(1 / np.log2(rank + 1) for rank in ranks)


def test_folding_in_a_new_interest_beats_the_stale_vector() -> None:
    users, items, seen, popularity = two_clusters()
    test = np.array([[0, 33, 13], [0, 30, 10], [0, 35, 15], [0, 31, 11], [0, 34, 14], [0, 32, 12],  # shuffled
                     [7, 36, 1], [7, 37, 2], [7, 38, 3], [7, 39, 4],  # user 7: unknown to the bundle
                     [1, 20, 5]])  # one interaction: not evaluated
    report = fold_in_protocol(users, items, seen, test, popularity)
    assert [report[group]["users"] for group in ("warm", "new", "all")] == [1, 1, 2]
    warm, new = report["warm"], report["new"]
    assert list(warm) == ["users", "stale", "mean", "least_squares", "popularity"]
    # User 0 folds in 30, 31, 32 and is asked for 33, 34, 35; the stale vector ranks 28 A items first.
    assert warm["stale"]["recall@20"] == 0.0 and warm["stale"]["recall@50"] == 1.0
    # The mean rule ranks B first, by their small first coordinate: 39, 38, 37, 36, then 35, 34, 33.
    assert warm["mean"]["recall@10"] == 1.0
    assert warm["mean"]["ndcg@10"] == pytest.approx(dcg([5, 6, 7]) / dcg([1, 2, 3]))
    # Least squares adds the new interest at the level of the old one (B is orthogonal to A):
    # never below the stale vector.
    for key, value in warm["stale"].items():
        assert warm["least_squares"][key] >= value
    # Popularity: items 2..29 (28 of them) rank first, then 33, 34, 35 at ranks 29, 30, 31.
    assert warm["popularity"]["recall@20"] == 0.0 and warm["popularity"]["recall@50"] == 1.0
    assert warm["popularity"]["ndcg@50"] == pytest.approx(dcg([29, 30, 31]) / dcg([1, 2, 3]))
    # User 7 folds in 36, 37 and is asked for 38, 39; popularity puts them at ranks 37, 38.
    assert new["stale"] == new["popularity"]
    assert new["popularity"]["ndcg@50"] == pytest.approx(dcg([37, 38]) / dcg([1, 2]))
    assert new["mean"]["ndcg@10"] == pytest.approx(1.0) and new["least_squares"]["ndcg@10"] == pytest.approx(1.0)
    assert report["all"]["mean"]["recall@10"] == 1.0
    assert report["all"]["stale"]["ndcg@50"] == pytest.approx((warm["stale"]["ndcg@50"] + new["stale"]["ndcg@50"]) / 2)
    assert "popularity" in report["notes"]["stale"]


def test_excluded_items_are_never_hits_nor_targets() -> None:
    users, items, seen, popularity = two_clusters()
    # User 1 trained on item 2; folds in 5, 6; then repeats 2 and 5 (excluded) and takes 30, the one target.
    test = np.array([[1, 5, 1], [1, 6, 2], [1, 2, 3], [1, 5, 4], [1, 30, 5],
                     [2, 7, 1], [2, 7, 2]])  # user 2's only later item was folded in: no target, not counted
    oracle_items = np.linspace(0.0, 1.0, 40, dtype=np.float32)[:, None]
    oracle_items[[2, 5, 6]] = 10.0  # the excluded items would rank first
    oracle_items[30] = 5.0
    extra = {"oracle": (np.ones((N_USERS, 1), np.float32), oracle_items)}
    report = fold_in_protocol(users, items, seen, test, popularity, extra=extra)
    assert report["all"]["users"] == report["warm"]["users"] == 1 and report["new"] == {"users": 0}
    assert report["warm"]["oracle"] == {f"{m}@{k}": 1.0 for m in ("recall", "ndcg") for k in (10, 20, 50)}
    cases = split_test_period(test, seen)
    assert cases.users.tolist() == [1]
    assert cases.folded[0].tolist() == [5, 6] and cases.targets[0].tolist() == [30]
    assert cases.excluded[0].tolist() == [2, 5, 6]


def test_split_folds_the_floor_of_half_in_time_order() -> None:
    seen = Seen.from_pairs(np.zeros((0, 2)), 1)
    cases = split_test_period(np.array([[0, 3, 30], [0, 1, 10], [0, 2, 20]]), seen)
    assert cases.folded[0].tolist() == [1] and cases.targets[0].tolist() == [2, 3]


def random_world(seed: int = 0) -> tuple[np.ndarray, np.ndarray, Seen, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_users, n_items = 40, 70
    users = rng.normal(size=(n_users, 4)).astype(np.float32)
    items = rng.normal(size=(n_items, 4)).astype(np.float32)
    train = np.stack([rng.integers(0, n_users, 300), rng.integers(0, n_items, 300)], axis=1)
    test = np.stack([rng.integers(0, n_users + 10, 400), rng.integers(0, n_items, 400), rng.integers(0, 1000, 400)],
                    axis=1)
    popularity = np.bincount(train[:, 1], minlength=n_items).astype(np.float32)
    return users, items, Seen.from_pairs(train, n_users), test, popularity


def test_batching_does_not_change_the_result() -> None:
    users, items, seen, test, popularity = random_world()
    retrain = {"retrain": (np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32), items)}
    reports = [fold_in_protocol(users, items, seen, test, popularity, extra=retrain, batch_size=size)
               for size in (1, 7, 10_000)]
    assert reports[0]["warm"]["users"] > 0 and reports[0]["new"]["users"] > 0
    assert reports[0] == reports[1] == reports[2]


def test_bad_extras_and_names_are_refused() -> None:
    users, items, seen, test, popularity = random_world()
    with pytest.raises(ValueError, match="per test user"):
        fold_in_protocol(users, items, seen, test, popularity, extra={"retrain": (users, items)})  # no new users
    with pytest.raises(ValueError, match="unique"):
        fold_in_protocol(users, items, seen, test, popularity, extra={"mean": (users, items)})


@pytest.mark.parametrize("rule", sorted(FOLD_IN_RULES))
def test_the_protocol_folds_in_exactly_as_the_service(rule: str) -> None:
    users, items, seen, _, _ = random_world()
    bundle = SimpleNamespace(
        user_ids=[f"u{row}" for row in range(len(users))], user_vectors=users,
        item_ids=[f"i{row}" for row in range(len(items))], item_vectors=items, seen=seen,
        manifest=SimpleNamespace(dims=SimpleNamespace(item=items.shape[1])),
    )
    state = UserState(bundle, rule=rule)  # type: ignore[arg-type]
    interactions = {3: [5, 9, 5, 60], len(users) + 2: [1, 2, 3]}  # a bundle user and a new one
    for user, rows in interactions.items():
        for row in rows:  # one at a time, as the service's store follower applies them
            state.record(f"u{user}", [f"i{row}"], items[[row]])
        expected = fold_in_user(FOLD_IN_RULES[rule], users, items, seen, user, np.array(rows))
        assert np.array_equal(state.vector(f"u{user}"), expected)
