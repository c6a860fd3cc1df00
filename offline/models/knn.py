"""The content kNN table with FAISS: for every row of a feature matrix, the `k` key rows most
cosine-similar to it (inner product of L2-normalised rows), best first.

Up to `EXACT_MAX_KEYS` key rows the search is exact: `IndexFlatIP` (BLAS in blocks, bounded
memory), the same neighbours as a dense similarity matrix and a top-k.

Above it, an IVF self-join (`IVFParams`): the keys are clustered by spherical k-means into
`nlist = 4 sqrt(n_keys)` inverted lists (`IndexIVFFlat`; 32 training points per list, 10
iterations), every row probes its `nprobe = 48` nearest lists, and the search runs list by list
instead of query by query (as FAISS's `contrib.big_batch_search`): all rows that probe a list
are matched against its vectors in one BLAS product (`faiss.knn`), into one `ResultHeap`. One
coarse assignment of every row serves both the adds (a key's nearest list) and the probes.
Rows whose probed lists hold fewer than `k` keys get an exact search. Recall@k against exact
search is measured on a sample of rows (exact search of those rows only) and logged.

Why IVF and not HNSW: scripts/bench_knn.py on this 2-core AMD EPYC (no GPU), 512-d clustered
unit vectors, k=10, 2 threads, recall against exact search, CPU seconds (the machine was
shared, at a load of 4 to 9, so wall times ran 1.4 to 2x CPU / 2):
    N          exact IndexFlatIP   IVF self-join (here)      HNSW32 efC 40 efSearch 48
    10,000     1 s                 2 s, recall 1.0000        3 s, recall 0.9989
    100,000    122 s               32 s, recall 0.9956       57 s, recall 0.9893
    1,000,000  (hours)             589 s, recall 0.9770      797 s, recall 0.9464
(10,000 sampled rows at 10^6, every row below it). The IVF table at 10^6 took 816 s of wall time
at a load of 4 to 9 and 492 s (556 CPU s) in a rerun at a load of 2 to 4; its peak RSS was 8.8 GB
with the 2 GB of features (a normalised copy, the lists' copy, the probes).
HNSW costs more and its recall falls faster with N: every query walks the graph with scattered
single-vector distances, and the build does the same. IVF searched query by query
(`IndexIVFFlat.search`) scans each list one query at a time, memory-bound: at 100,000 rows, 632
lists and nprobe 16 took 54 CPU s (recall 0.985), while the self-join's products run at about 30
GMAC/s per core (316 lists, nprobe 8: 196 G multiply-adds in 6.5 s on one thread). At one
million rows the recall of a fixed nprobe falls (1,000 sampled rows, 4,000 lists: nprobe 16
gives 0.92, 24 gives 0.94, 32 gives 0.96), hence nprobe 48. Three quarters of the time is the
join, nearly all of it in BLAS (py-spy); its cost is about nprobe * sum(list size^2) * d, so
more lists cut it, but k-means and the coarse assignment grow with the number of lists.
"""

import logging
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import faiss
import numpy as np
from faiss.contrib.ivf_tools import add_preassigned

log = logging.getLogger(__name__)

EXACT_MAX_KEYS = 50_000
BLOCK = 65_536


@dataclass(frozen=True)
class IVFParams:
    """The approximate search's knobs (module docstring)."""

    lists_per_sqrt: float = 4.0
    nprobe: int = 48
    train_points_per_list: int = 32
    kmeans_iterations: int = 10
    seed: int = 0

    def nlist(self, n_keys: int) -> int:
        return max(1, min(n_keys // 8, round(self.lists_per_sqrt * math.sqrt(n_keys))))


@dataclass(frozen=True)
class KnnTable:
    """`rows[i]`: the key rows nearest to row i, best first. `recall`: recall@k against exact
    search on `recall_rows` sampled rows (None when the search was exact)."""

    rows: np.ndarray
    method: str
    recall: float | None = None
    recall_rows: int = 0


@contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """FAISS's OpenMP pool (its own libgomp and BLAS, apart from torch's) at `n` threads."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def unit_rows(features: np.ndarray) -> np.ndarray:
    """A float32 copy with L2-normalised rows (zero rows stay zero)."""
    unit = np.array(features, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(unit)
    return unit


def nearest_key_rows(
    features: np.ndarray,
    key_rows: np.ndarray,
    k: int,
    *,
    threads: int,
    exact_max_keys: int = EXACT_MAX_KEYS,
    ivf: IVFParams = IVFParams(),
    recall_rows: int = 1000,
) -> KnnTable:
    """The `k` rows among `key_rows` most cosine-similar to each row of `features`, searched
    with `threads` FAISS threads: exact up to `exact_max_keys` keys, else the IVF self-join."""
    if not 1 <= k <= len(key_rows):
        raise ValueError(f"k={k} needs 1 <= k <= the number of key rows ({len(key_rows)})")
    unit = unit_rows(features)
    key_rows = np.asarray(key_rows, dtype=np.int64)
    with faiss_threads(threads):
        if len(key_rows) <= exact_max_keys:
            return KnnTable(exact_search(unit, unit, key_rows, k, threads), "exact IndexFlatIP")
        rows = ivf_search(unit, key_rows, k, ivf, threads)
        sample = np.random.default_rng(ivf.seed).choice(len(unit), min(recall_rows, len(unit)), replace=False)
        recall = recall_at_k(rows[sample], exact_search(unit, unit[sample], key_rows, k, threads))
    method = f"IVF{ivf.nlist(len(key_rows))},Flat self-join nprobe={ivf.nprobe}"
    log.info("content kNN table, %d rows over %d keys, %s: recall@%d %.4f against exact search on %d rows",
             len(unit), len(key_rows), method, k, recall, len(sample))
    return KnnTable(rows, method, recall, len(sample))


def exact_search(unit: np.ndarray, queries: np.ndarray, key_rows: np.ndarray, k: int, threads: int) -> np.ndarray:
    """The exact top-`k` key rows of each query: `IndexFlatIP` over blocks of `unit[key_rows]`."""
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for start in range(0, len(key_rows), BLOCK):
        block = key_rows[start : start + BLOCK]
        index = faiss.IndexFlatIP(unit.shape[1])
        index.add(unit[block])

        def search(share: np.ndarray) -> None:
            for chunk in _chunks(share):
                similarity, positions = index.search(queries[chunk], min(k, len(block)))
                heap.add_result_subset(chunk, similarity, block[positions])

        _in_threads(threads, len(queries), search)
    heap.finalize()
    return heap.I


def ivf_search(unit: np.ndarray, key_rows: np.ndarray, k: int, params: IVFParams, threads: int) -> np.ndarray:
    """The approximate top-`k` key rows of every row of `unit` (the IVF self-join)."""
    dim, nlist = unit.shape[1], params.nlist(len(key_rows))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = params.kmeans_iterations
    index.cp.min_points_per_centroid = 1  # few points per list is the choice, not an accident
    index.cp.spherical = True
    index.cp.seed = params.seed
    n_train = min(len(key_rows), nlist * params.train_points_per_list)  # sampled here: no copy of every key
    index.train(unit[np.sort(np.random.default_rng(params.seed).choice(key_rows, n_train, replace=False))])
    nprobe = min(params.nprobe, nlist)
    probes = np.empty((len(unit), nprobe), dtype=np.int64)

    def assign(share: np.ndarray) -> None:
        for chunk in _chunks(share):
            probes[chunk] = index.quantizer.search(unit[chunk], nprobe)[1]

    _in_threads(threads, len(unit), assign)
    for chunk in _chunks(key_rows):
        add_preassigned(index, unit[chunk], probes[chunk, 0], chunk)
    heap = faiss.ResultHeap(len(unit), k, keep_max=True)
    _in_threads(threads, len(unit), lambda share: _join_by_list(index, unit, share, probes[share], k, heap))
    heap.finalize()
    short = np.flatnonzero((heap.I < 0).any(axis=1))
    heap.I[short] = exact_search(unit, unit[short], key_rows, k, threads)
    return heap.I


def _join_by_list(
    index: faiss.IndexIVFFlat, unit: np.ndarray, rows: np.ndarray, probes: np.ndarray, k: int, heap: faiss.ResultHeap
) -> None:
    """Into `heap`: each of `rows`' top-`k` over the lists it probes, one BLAS product per list."""
    flat = probes.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(index.nlist + 1))
    prober = rows[order // probes.shape[1]]
    lists = index.invlists
    for lst in range(index.nlist):
        size, queries = lists.list_size(lst), prober[bounds[lst] : bounds[lst + 1]]
        if size == 0 or len(queries) == 0:
            continue
        ids = faiss.rev_swig_ptr(lists.get_ids(lst), size)
        vectors = faiss.rev_swig_ptr(lists.get_codes(lst), size * lists.code_size).view(np.float32)
        similarity, positions = faiss.knn(unit[queries], vectors.reshape(size, -1), min(k, size),
                                          metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result_subset(queries, similarity, ids[positions])


def _in_threads(threads: int, n_rows: int, work: Callable[[np.ndarray], None]) -> None:
    """`work` on `threads` interleaved shares of the rows 0..n_rows-1, each in a Python thread
    with single-threaded FAISS (which frees the GIL). Splitting the rows once replaces an
    OpenMP barrier per BLAS call, which costs a scheduler slice whenever another process holds
    a core (3x the CPU time at a load of 5 on 2 cores). The shares write disjoint heap rows."""

    def run(share: int) -> None:
        faiss.omp_set_num_threads(1)  # this thread's OpenMP setting only
        work(np.arange(share, n_rows, threads))

    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(run, range(threads)):
            pass


def _chunks(rows: np.ndarray) -> Iterator[np.ndarray]:
    return (rows[start : start + BLOCK] for start in range(0, len(rows), BLOCK))


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """The mean share of each row's true top-k that its found top-k holds."""
    return sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth)) / truth.size
