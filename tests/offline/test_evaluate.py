"""Full-ranking metrics checked by hand, masking rules, the cold protocol, popularity."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from offline.ranking import SCORE_BYTES, UserItems, evaluate_ranking, ranking_metrics, user_batch_size
from offline.train.evaluate import Evaluator, popularity_vectors
from offline.train.rss import peak_rss_bytes, reset_peak_rss


def test_metrics_match_hand_computed_values() -> None:
    # user A has 2 targets, hit at ranks 1 and 3; user B has 1 target, hit at rank 2
    hits = np.array([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0]], dtype=bool)
    metrics = ranking_metrics(hits, np.array([2, 1]), ks=(1, 3, 5))
    log2 = math.log2
    expected = {
        "recall@1": (1 / 2 + 0) / 2,
        "recall@3": (1 + 1) / 2,
        "recall@5": (1 + 1) / 2,
        "precision@1": (1 + 0) / 2,
        "precision@3": (2 / 3 + 1 / 3) / 2,
        "precision@5": (2 / 5 + 1 / 5) / 2,
        "ndcg@1": (1 + 0) / 2,
        "ndcg@3": ((1 + 1 / log2(4)) / (1 + 1 / log2(3)) + (1 / log2(3)) / 1) / 2,
        "ndcg@5": ((1 + 1 / log2(4)) / (1 + 1 / log2(3)) + (1 / log2(3)) / 1) / 2,
        "map@1": (1 / 1 + 0) / 2,
        "map@3": ((1 + 2 / 3) / 2 + (1 / 2) / 1) / 2,
        "map@5": ((1 + 2 / 3) / 2 + (1 / 2) / 1) / 2,
    }
    assert metrics.keys() == expected.keys()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key


def test_ideal_dcg_uses_min_of_targets_and_k() -> None:
    # 3 targets, all hit in the top 2: NDCG@2 is perfect although a third target exists
    metrics = ranking_metrics(np.array([[1, 1]], dtype=bool), np.array([3]), ks=(2,))
    assert metrics["ndcg@2"] == pytest.approx(1.0)
    assert metrics["recall@2"] == pytest.approx(2 / 3)
    assert metrics["map@2"] == pytest.approx(1.0)


def test_user_items_coordinates_and_membership() -> None:
    sets = UserItems(np.array([[2, 4], [0, 1], [2, 0], [0, 1]]), n_users=3)
    assert sets.users().tolist() == [0, 2]
    assert sets.counts(np.array([0, 1, 2])).tolist() == [1, 0, 2]
    rows, items = sets.coordinates(np.array([2, 1, 0]))
    assert sorted(zip(rows.tolist(), items.tolist())) == [(0, 0), (0, 4), (2, 1)]
    asked = np.array([[4, 1, 0], [0, 1, 2], [1, 4, 3]])
    assert sets.contains(np.array([2, 1, 0]), asked).tolist() == [
        [True, False, True],
        [False, False, False],
        [True, False, False],
    ]
    assert not UserItems(np.zeros((0, 2), dtype=np.int64), 2).contains(np.array([0]), np.array([[0]])).any()


def one_user_split() -> SimpleNamespace:
    """Items 0-4 warm, 5 cold; user 0 trained on 0 and 1, valid 2, test 3, cold test 5."""
    return SimpleNamespace(
        n_users=1,
        n_items=6,
        train=np.array([[0, 0], [0, 1]]),
        valid=np.array([[0, 2]]),
        test=np.array([[0, 3]]),
        cold_test=np.array([[0, 5]]),
        cold_items=np.array([5]),
        new_user_ids=[],
        new_user_test=np.zeros((0, 2), dtype=np.int64),
    )


def vectors(scores: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones(1, 1), torch.tensor(scores, dtype=torch.float32).unsqueeze(1)


def test_valid_masks_training_positives_and_cold_items() -> None:
    evaluator = Evaluator(one_user_split(), ks=(1, 2))
    # train positives 0, 1 and the cold item 5 score highest, yet valid item 2 comes first
    assert evaluator.evaluate_valid(vectors([10, 9, 8, 7, 6, 11]))["recall@1"] == 1.0


def test_test_masks_training_positives_only() -> None:
    evaluator = Evaluator(one_user_split(), ks=(1, 2))
    # MMRec: the valid item 2 stays a candidate at test time and pushes test item 3 to rank 2
    metrics = evaluator.evaluate_test(vectors([10, 9, 8, 7, 6, 11]))
    assert metrics["recall@1"] == 0.0 and metrics["recall@2"] == 1.0


def test_cold_protocol_ranks_among_all_and_among_cold() -> None:
    evaluator = Evaluator(one_user_split(), ks=(1, 2))
    cold = evaluator.evaluate_cold(vectors([10, 9, 8, 7, 6, 7.5]))
    assert cold["all"]["recall@1"] == 0.0 and cold["all"]["recall@2"] == 1.0  # behind item 2
    assert cold["cold_only"]["recall@1"] == 1.0


def test_all_items_ranks_test_and_cold_targets_together() -> None:
    evaluator = Evaluator(one_user_split(), ks=(1, 2, 3))
    # order after masking train items 0, 1: item 2 (8), cold item 5 (7.5), test item 3 (7), item 4
    metrics = evaluator.evaluate_all_items(vectors([10, 9, 8, 7, 6, 7.5]))
    assert (metrics["recall@1"], metrics["recall@2"], metrics["recall@3"]) == (0.0, 0.5, 1.0)


def test_new_users_get_popularity_among_all_items() -> None:
    split = one_user_split()
    split.train = np.array([[0, 0], [0, 1], [0, 4]])
    split.cold_test = np.array([[0, 5]])
    split.new_user_ids = ["n1", "n2"]
    split.new_user_test = np.array([[0, 1], [1, 0], [1, 3]])  # n1 wants item 1; n2 items 0 and 3
    evaluator = Evaluator(split, ks=(3,))
    # popularity ties items 0, 1 and 4 (one each); the rest score 0: n1 hits 1 of 1 in the top 3, n2
    # hits item 0 only (item 3 was never bought): recall (1 + 1/2) / 2
    assert evaluator.evaluate_new_users()["recall@3"] == pytest.approx(0.75)
    assert Evaluator(one_user_split()).evaluate_new_users() is None


def test_no_cold_interactions_means_no_cold_metrics() -> None:
    split = one_user_split()
    split.cold_test = np.zeros((0, 2), dtype=np.int64)
    assert Evaluator(split).evaluate_cold(vectors([1, 2, 3, 4, 5, 6])) is None


def test_evaluator_rejects_cold_items_outside_cold_test() -> None:
    split = one_user_split()
    split.valid = np.array([[0, 5]])
    with pytest.raises(ValueError, match="cold items"):
        Evaluator(split)


def test_evaluator_needs_valid_and_test_interactions() -> None:
    split = one_user_split()
    split.test = np.zeros((0, 2), dtype=np.int64)
    with pytest.raises(ValueError, match="no test interactions"):
        Evaluator(split)


def test_fewer_candidates_than_k_are_padded_as_misses() -> None:
    targets = UserItems(np.array([[0, 1]]), 1)
    exclude = UserItems(np.zeros((0, 2), dtype=np.int64), 1)
    metrics = evaluate_ranking(torch.ones(1, 1), torch.tensor([[2.0], [1.0], [0.0]]), targets, exclude, ks=(5,))
    assert metrics["recall@5"] == 1.0
    assert metrics["precision@5"] == pytest.approx(1 / 5)


def test_masked_items_are_never_hits_even_when_they_fill_the_list() -> None:
    # one candidate only, k = 2: the second slot is a masked (-inf) item that is also a target
    targets = UserItems(np.array([[0, 0], [0, 1]]), 1)
    exclude = UserItems(np.zeros((0, 2), dtype=np.int64), 1)
    candidates = torch.tensor([True, False])
    metrics = evaluate_ranking(torch.ones(1, 1), torch.tensor([[1.0], [5.0]]), targets, exclude, candidates, ks=(2,))
    assert metrics["recall@2"] == 0.5


def test_popularity_baseline() -> None:
    users, items = popularity_vectors(3, 4, np.array([[0, 2], [1, 2], [2, 2], [0, 1]]))
    assert users.shape == (3, 1)
    assert items.squeeze(1).tolist() == [0.0, 1.0, 3.0, 0.0]
    split = SimpleNamespace(
        n_users=2,
        n_items=4,
        train=np.array([[0, 2], [1, 2], [0, 1]]),
        valid=np.array([[1, 1]]),
        test=np.array([[1, 0]]),
        cold_test=np.zeros((0, 2), dtype=np.int64),
        cold_items=np.zeros(0, dtype=np.int64),
        new_user_ids=[],
        new_user_test=np.zeros((0, 2), dtype=np.int64),
    )
    pop = popularity_vectors(2, 4, split.train)
    assert Evaluator(split, ks=(1,)).evaluate_valid(pop)["recall@1"] == 1.0  # item 1 is the most popular unseen


def random_ranking_case(n_users: int = 300, n_items: int = 400, seed: int = 0) -> dict:
    """Random vectors, and per user random training items (excluded) and distinct targets."""
    rng = np.random.default_rng(seed)
    excluded, wanted = [], []
    for user in range(n_users):
        items = rng.choice(n_items, 12, replace=False)
        excluded += [(user, item) for item in items[: rng.integers(0, 8)]]
        wanted += [(user, item) for item in items[8 : 8 + rng.integers(0, 4)]]  # some users have none
    return {
        "user_vectors": torch.from_numpy(rng.standard_normal((n_users, 8)).astype(np.float32)),
        "item_vectors": torch.from_numpy(rng.standard_normal((n_items, 8)).astype(np.float32)),
        "targets": UserItems(np.array(wanted), n_users),
        "exclude": UserItems(np.array(excluded), n_users),
        "candidates": torch.from_numpy(rng.random(n_items) < 0.7),
    }


def brute_force_recall_precision(case: dict, k: int) -> tuple[float, float]:
    """Recall@k and precision@k from the whole score matrix, ranked by numpy."""
    scores = (case["user_vectors"] @ case["item_vectors"].T).numpy().astype(np.float64)
    scores[:, ~case["candidates"].numpy()] = -np.inf
    for user, item in zip(*np.divmod(case["exclude"].keys, 2**32)):
        scores[user, item] = -np.inf
    recalls, precisions = [], []
    for user in case["targets"].users():
        wanted = set(case["targets"].indices[case["targets"].indptr[user] : case["targets"].indptr[user + 1]])
        top = [item for item in np.argsort(-scores[user], kind="stable")[:k] if np.isfinite(scores[user, item])]
        hits = len(wanted.intersection(top))
        recalls.append(hits / len(wanted))
        precisions.append(hits / k)
    return float(np.mean(recalls)), float(np.mean(precisions))


def test_small_batches_give_exactly_the_metrics_of_one_batch() -> None:
    case = random_ranking_case()
    whole = evaluate_ranking(**case, batch_size=100_000)
    assert whole == evaluate_ranking(**case, batch_size=7)
    assert whole == evaluate_ranking(**case, batch_size=100_000, score_bytes=1)  # one user per batch
    for k in (5, 50):
        recall, precision = brute_force_recall_precision(case, k)
        assert whole[f"recall@{k}"] == pytest.approx(recall) and whole[f"precision@{k}"] == pytest.approx(precision)
    all_items = dict(case, candidates=None)
    assert evaluate_ranking(**all_items, batch_size=100_000) == evaluate_ranking(**all_items, batch_size=3)


def test_batches_fit_the_score_budget_at_ten_times_amazon_clothing() -> None:
    users = user_batch_size(230_330, 4096)
    assert 1 <= users and users * 230_330 * 4 <= SCORE_BYTES <= 300 * 2**20
    assert user_batch_size(100, 4096) == 4096  # a small catalog keeps the configured batch
    assert user_batch_size(10**9, 4096) == 1


def test_evaluation_memory_does_not_grow_with_users_times_items() -> None:
    # 2,000 users x 50,000 items: one batch of float32 scores for all would be 400 MB; in batches
    # of 64 MiB, one batch's scores alone may be alive (two overlapping took 128 MB)
    rng = np.random.default_rng(1)
    n_users, n_items = 2_000, 50_000
    user_vectors = torch.from_numpy(rng.standard_normal((n_users, 16)).astype(np.float32))
    item_vectors = torch.from_numpy(rng.standard_normal((n_items, 16)).astype(np.float32))
    targets = UserItems(np.column_stack([np.arange(n_users), rng.integers(0, n_items, n_users)]), n_users)
    exclude = UserItems(np.column_stack([np.arange(n_users), rng.integers(0, n_items, n_users)]), n_users)
    budget = 64 * 2**20
    evaluate_ranking(user_vectors, item_vectors, targets, exclude, score_bytes=budget)  # torch's one-off setup
    if not reset_peak_rss():
        pytest.skip("cannot reset the peak RSS here")
    before = peak_rss_bytes()
    evaluate_ranking(user_vectors, item_vectors, targets, exclude, score_bytes=budget)
    assert peak_rss_bytes() - before < 1.25 * budget
