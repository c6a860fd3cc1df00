"""service.index.ItemIndex: add / replace / remove / search, exact after removals (Flat, HNSW, IVF),
tombstone compaction, concurrent use; and deletes over HTTP on an IVF bundle."""

import subprocess
import sys
import threading
from pathlib import Path

import faiss
import httpx
import numpy as np
import pytest
from bundle_factory import build_bundle, make_item, prototype_item
from served import served
from service_testing import item_body

from cliper.bundle import build_index, read_bundle
from service.index import ItemIndex

K = 8
ROOT = Path(__file__).resolve().parents[2]


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


# --- removals and replacements stay exact (issue 14) -------------------------------------------

EXACT_CASES = [("Flat", 500), ("HNSW32", 500), ("IVF16,Flat", 2000), ("IVF8,Flat", 375)]


def search_params(factory: str) -> str:
    """Parameters under which `factory` searches exhaustively (IVF: every list)."""
    if factory.startswith("IVF"):
        return f"nprobe={factory[3:].split(',')[0]}"
    return "efSearch=512" if factory.startswith("HNSW") else ""


class Catalog:
    """An ItemIndex beside the truth it should serve: item id -> vector of every live item."""

    def __init__(self, factory: str, n: int, seed: int = 0, **options: float) -> None:
        self.rng = np.random.default_rng(seed)
        vectors = self.unit(n)
        index, _ = build_index(vectors, factory, search_params(factory))
        self.index = ItemIndex(index, [f"i{row}" for row in range(n)], vectors, **options)
        self.truth = {f"i{row}": vector for row, vector in enumerate(vectors)}
        self.added = 0

    def unit(self, n: int) -> np.ndarray:
        vectors = self.rng.normal(size=(n, K)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def delete(self, item_id: str) -> None:
        assert self.index.remove(item_id)
        del self.truth[item_id]

    def put(self, item_id: str) -> None:
        vector = self.unit(1)[0]
        _, replaced = self.index.put(item_id, vector)
        assert replaced == (item_id in self.truth)
        self.truth[item_id] = vector

    def add(self) -> str:
        self.added += 1
        self.put(f"new{self.added}")
        return f"new{self.added}"

    def live_id(self) -> str:
        return str(self.rng.choice(sorted(self.truth)))

    def exact(self, query: np.ndarray, k: int) -> list[str]:
        ids = list(self.truth)
        scores = np.stack([self.truth[item_id] for item_id in ids]) @ query
        return [ids[i] for i in np.argsort(-scores)[:k]]

    def check(self, queries: np.ndarray, k: int = 10) -> None:
        """Every query's answer is the exact top k over the live items, padding aside."""
        rows, scores = self.index.search(queries, k)
        for query, found, found_scores in zip(queries, rows, scores, strict=True):
            ids = [self.index.item_id(row) for row in found if row >= 0]
            assert ids == self.exact(query, k)
            expected = [float(self.truth[item_id] @ query) for item_id in ids]
            np.testing.assert_allclose(found_scores[found >= 0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("factory", "n"), EXACT_CASES)
def test_results_equal_exact_search_after_every_change(factory: str, n: int) -> None:
    """IVF under IndexIDMap2 shifted ids by one after a removal (then aborted on the next one)."""
    catalog = Catalog(factory, n)
    queries = catalog.unit(6)
    catalog.check(queries)
    for step in range(40):
        match step % 4:
            case 0:  # the nearest items of a query: searches must look past the holes they leave
                catalog.delete(catalog.exact(queries[step % len(queries)], 1)[0])
            case 1:
                catalog.delete(catalog.live_id())
            case 2:
                catalog.put(catalog.live_id())  # replace: a new row, the old one withdrawn
            case 3:
                catalog.add()
        catalog.check(queries)
        catalog.check(np.stack([catalog.truth[catalog.live_id()]]), k=1)  # each live item finds itself
    assert catalog.index.size == len(catalog.truth) == n - 20 + 10


REPEATED_DELETES = """
import numpy as np
from cliper.bundle import build_index
from service.index import ItemIndex
vectors = np.random.default_rng(1).normal(size=(375, 8)).astype(np.float32)
index = ItemIndex(build_index(vectors, "IVF8,Flat", "nprobe=8")[0], [f"i{r}" for r in range(375)], vectors)
for r in range(0, 375, 3):
    assert index.remove(f"i{r}")
    index.put(f"i{r + 1}", vectors[r])
assert index.size == 250
"""


def test_repeated_deletes_on_ivf_do_not_abort_the_process() -> None:
    """The second removal tripped FAISS's `j == index->ntotal` assertion, an abort that takes the process down."""
    done = subprocess.run([sys.executable, "-c", REPEATED_DELETES], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# --- tombstone compaction ---------------------------------------------------------------------


def test_compaction_past_the_threshold_drops_the_tombstones() -> None:
    catalog = Catalog("HNSW32", 600, compact_min=20, compact_ratio=0.05)  # threshold: > max(20, 30) tombstones
    queries = catalog.unit(6)
    for _ in range(30):
        catalog.delete(catalog.exact(queries[0], 1)[0])
        catalog.check(queries)
    assert catalog.index.tombstones == 30  # not past the threshold yet
    rows = {item_id: catalog.index.row_of(item_id) for item_id in catalog.truth}
    catalog.delete(catalog.live_id())
    catalog.check(queries)  # most likely while the rebuild runs
    catalog.index.wait_for_compaction(timeout=60)
    assert catalog.index.tombstones == 0
    assert all(rows[item_id] == catalog.index.row_of(item_id) for item_id in catalog.truth)  # rows stay put
    catalog.check(queries)
    for _ in range(10):  # the compacted index keeps working: more changes, still exact
        catalog.delete(catalog.live_id())
        catalog.put(catalog.live_id())
        catalog.check(queries)
    assert catalog.index.tombstones == 20


def test_changes_made_during_a_compaction_are_kept() -> None:
    """The rebuild runs outside the lock; deletes, replacements and adds meanwhile must survive the swap."""
    catalog = Catalog("HNSW32", 600, compact_min=20, compact_ratio=0.0)
    queries = catalog.unit(6)
    during: list[str] = []
    original = ItemIndex._fill

    def fill_with_changes(index: ItemIndex, fresh: faiss.Index, rows: np.ndarray) -> None:
        if not during:  # the first batch: change the catalog before it lands in the new index
            during.extend([catalog.live_id(), catalog.live_id()])
            catalog.delete(during[0])
            catalog.put(during[1])
            during.append(catalog.add())
            catalog.check(queries)
        original(index, fresh, rows)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ItemIndex, "_fill", fill_with_changes)
        for _ in range(21):
            catalog.delete(catalog.live_id())
        catalog.index.wait_for_compaction(timeout=60)
    assert len(during) == 3
    assert catalog.index.tombstones == 2  # the two rows withdrawn while the new index was built from them
    catalog.check(queries)
    for item_id in during[1:]:
        catalog.check(catalog.truth[item_id][None, :], k=1)


def test_searches_during_compaction_succeed() -> None:
    catalog = Catalog("HNSW32", 3000, compact_min=100, compact_ratio=0.0)
    index = catalog.index
    queries = catalog.unit(32)
    gone: set[str] = set()  # deleted before a search starts, so never in its answer
    errors: list[BaseException] = []
    stop = threading.Event()
    overlapped = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                excluded = set(gone)
                compacting = index.compacting
                rows, _ = index.search(queries, 10)
                assert (rows >= 0).all()
                assert not excluded & {index.item_id(row) for row in rows.ravel()}
                if compacting and index.compacting:
                    overlapped.set()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in readers:
        thread.start()
    try:
        for _ in range(101):
            item_id = catalog.live_id()
            catalog.delete(item_id)
            gone.add(item_id)
        index.wait_for_compaction(timeout=60)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert not errors and overlapped.is_set()
    assert index.tombstones == 0 and index.size == 2899
    catalog.check(queries)


# --- end to end: python -m service on an IVF bundle -------------------------------------------


def test_deletes_and_replacements_over_http_on_an_ivf_bundle(tmp_path: Path) -> None:
    """The reported case: IVF8,Flat over 375 items; the second DELETE used to abort the service."""
    factory = build_bundle(tmp_path / "bundle", n_items=375, index_factory="IVF8,Flat", search_params="nprobe=8")
    bundle = read_bundle(factory.path)
    vectors = dict(zip(bundle.item_ids, bundle.item_vectors, strict=True))
    user = "user-005"
    rng = np.random.default_rng(5)
    with served(factory.path, tmp_path / "data") as server:
        base, process, log = server.base, server.process, server.log
        for i in (3, 40, 41, 200, 374):
            try:
                deleted = httpx.delete(f"{base}/items/{bundle.item_ids[i]}")
            except httpx.TransportError:
                pytest.fail(f"the service died (exit status {process.wait(5)}): {log.read_text(errors='replace')}")
            assert deleted.status_code == 200, deleted.text
            del vectors[bundle.item_ids[i]]
        cluster = factory.user_clusters[user]
        replacements = [prototype_item(cluster, bundle.item_ids[0]), make_item(rng, cluster, bundle.item_ids[100])]
        for item in replacements:  # replace: the item moves to a new row, its old one is withdrawn
            item_id = item.item_id
            body = item_body(item)
            assert httpx.post(f"{base}/items", params={"replace": True}, json=body).status_code == 201
            got = httpx.get(f"{base}/items/{item_id}", params={"include_vector": True}).json()
            vectors[item_id] = np.array(got["vector"], dtype=np.float32)
        recs = httpx.get(f"{base}/users/{user}/recommendations", params={"k": 1000})
        assert recs.status_code == 200 and process.poll() is None, log.read_text(errors="replace")
    ids = [entry["item_id"] for entry in recs.json()["items"]]
    candidates = [item_id for item_id in vectors if item_id not in set(factory.seen[user])]
    scores = np.stack([vectors[item_id] for item_id in candidates]) @ bundle.user_vectors[bundle.user_ids.index(user)]
    assert ids == [candidates[i] for i in np.argsort(-scores)]
