"""The content kNN table (offline/models/knn.py, graph.knn_table): exact below the threshold,
the IVF self-join above it, against brute-force numpy."""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from offline.data.clustered_vectors import clustered_unit_vectors
from offline.models.graph import knn_neighbours, knn_table
from offline.models.knn import IVFParams, nearest_key_rows, recall_at_k


def brute_force(queries: np.ndarray, features: np.ndarray, key_rows: np.ndarray, k: int) -> np.ndarray:
    """Each query's `k` most cosine-similar rows among `features[key_rows]`, by a float64
    similarity matrix."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    similarity = unit(queries) @ unit(features[key_rows]).T
    return key_rows[np.argsort(-similarity, axis=1, kind="stable")[:, :k]]


def shares_found(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray]:
    """20,000 clustered 512-d rows and 16,000 of them as keys (warm)."""
    features = clustered_unit_vectors(20_000, seed=3)
    return features, np.sort(np.random.default_rng(3).choice(len(features), 16_000, replace=False))


def test_exact_table_equals_the_dense_method() -> None:
    features = torch.randn(300, 24, generator=torch.Generator().manual_seed(0))
    key_rows = torch.randperm(300, generator=torch.Generator().manual_seed(1))[:170].sort().values
    table = knn_table(features, key_rows, 7)
    dense = knn_neighbours(features, F.normalize(features[key_rows], dim=-1), key_rows, 7)
    assert table.dtype == torch.int64 and table.shape == (300, 7)
    assert torch.equal(table, dense)
    np.testing.assert_array_equal(table.numpy(), brute_force(features.numpy(), features.numpy(), key_rows.numpy(), 7))
    assert (table[key_rows, 0] == key_rows).all()  # a key row is its own nearest neighbour


def test_approximate_table_holds_the_exact_neighbours(clustered, caplog) -> None:
    features, key_rows = clustered
    with caplog.at_level(logging.INFO, logger="offline.models.knn"):
        table = nearest_key_rows(features, key_rows, 10, threads=2, exact_max_keys=10_000, recall_rows=2000)
    assert table.method.startswith("IVF") and table.rows.shape == (20_000, 10)
    assert np.isin(table.rows, key_rows).all()
    assert all(len(set(row)) == 10 for row in table.rows)
    assert (table.rows[key_rows, 0] == key_rows).all()
    sample = np.random.default_rng(4).choice(len(features), 2000, replace=False)
    recall = shares_found(table.rows[sample], brute_force(features[sample], features, key_rows, 10))
    assert recall >= 0.95
    assert table.recall is not None and abs(table.recall - recall) < 0.02  # the logged sample estimate
    assert f"recall@10 {table.recall:.4f}" in caplog.text


def test_torch_table_above_the_threshold_is_the_approximate_one(clustered, caplog) -> None:
    features, key_rows = clustered
    features, key_rows = features[:5000], key_rows[key_rows < 5000]
    with caplog.at_level(logging.INFO, logger="offline.models.knn"):
        table = knn_table(torch.from_numpy(features), torch.from_numpy(key_rows), 10, exact_max_keys=1000)
    assert "IVF" in caplog.text
    assert table.dtype == torch.int64
    assert shares_found(table.numpy(), brute_force(features, features, key_rows, 10)) >= 0.95


def test_rows_whose_lists_hold_too_few_keys_are_searched_exactly() -> None:
    features = clustered_unit_vectors(400, 16, mean_cluster=20, seed=1)
    key_rows = np.arange(0, 400, 2)
    one_probe = IVFParams(lists_per_sqrt=4.0, nprobe=1)  # 25 lists of 200 keys, none of 60
    table = nearest_key_rows(features, key_rows, 60, threads=2, exact_max_keys=0, ivf=one_probe)
    np.testing.assert_array_equal(table.rows, brute_force(features, features, key_rows, 60))


def test_k_beyond_the_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="number of key rows"):
        nearest_key_rows(np.eye(4, dtype=np.float32), np.arange(3), 4, threads=1)


def test_recall_counts_shared_ids_per_row() -> None:
    found = np.array([[1, 2, 3], [4, 5, 6]])
    truth = np.array([[3, 2, 9], [7, 8, 9]])
    assert recall_at_k(found, truth) == pytest.approx(2 / 6)
