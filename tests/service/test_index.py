"""service.index.ItemIndex: add / replace / remove / search, tombstones, concurrent use."""

import threading

import numpy as np
import pytest

from cliper.bundle import build_index
from service.index import ItemIndex

K = 8


def make_index(factory: str = "Flat", n: int = 200) -> tuple[ItemIndex, np.ndarray]:
    vectors = np.random.default_rng(0).normal(size=(n, K)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # unit vectors: each is its own top-1
    index, _ = build_index(vectors, factory, "efSearch=256" if factory.startswith("HNSW") else "")
    return ItemIndex(index, [f"i{row}" for row in range(n)], vectors), vectors


def top_ids(index: ItemIndex, query: np.ndarray, k: int) -> list[str]:
    rows, _ = index.search(query[None, :], k)
    return [index.item_id(row) for row in rows[0] if row >= 0][:k]


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_put_replace_remove(factory: str) -> None:
    index, vectors = make_index(factory)
    query = vectors[7] * 10
    assert top_ids(index, query, 1) == ["i7"]
    assert index.put("new", query) == (200, False) and index.size == 201
    assert top_ids(index, query, 1) == ["new"]
    row, replaced = index.put("i7", -query)
    assert replaced and row == 201 and index.size == 201
    assert "i7" not in top_ids(index, query, 5)
    assert index.remove("new") and not index.remove("new") and index.size == 200
    assert "new" not in top_ids(index, query, 50)
    np.testing.assert_array_equal(index.vectors([index.row_of("i7")])[0], -query)
    assert index.live_mask().sum() == 200


def test_concurrent_puts_and_searches() -> None:
    index, vectors = make_index()
    errors: list[BaseException] = []

    def writer(start: int) -> None:
        for i in range(start, start + 100):
            index.put(f"w{i}", vectors[i % 200])

    def reader() -> None:
        try:
            for i in range(200):
                rows, _ = index.search(vectors[i : i + 1], 5)
                assert (rows >= 0).all()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (0, 1000)] + [
        threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and index.size == 400 and index.n_rows == 400
