"""The live item index: the bundle's FAISS index plus ingested items, minus deleted ones.

FAISS ids are internal rows: the bundle's items are rows 0..n-1 and every ingested item (or
replacement) gets the next row. A str item_id maps to its live row. Rows are never reused or
renumbered, so the rest of the service (seen lists, the store follower) may hold on to them.
One lock guards every change and search, so concurrent use is safe.

Removal depends on the index type:

- Flat (and other flat-code indexes) under the bundle's `IndexIDMap2`: `remove_ids` drops the row.
- IVF indexes are taken out of the bundle's `IndexIDMap2` and keep the rows as their own ids
  (`add_with_ids`; the bundle added rows 0..n-1 in order, so the ids inside are already the rows).
  `IndexIDMap2` assumes the index it wraps numbers its vectors 0..ntotal-1 and that a removal
  shifts the later ones down by one, as Flat does. IVF instead stores each vector's number in its
  inverted lists and leaves the others as they are, so after one removal the map hands every
  later vector the id of its successor (neighbours came back shifted by one id), and the next
  removal fails FAISS's `j == index->ntotal` assertion, which aborts the process.
- HNSW (and GPU indexes, and any other that cannot remove) keeps deleted rows as tombstones.
  Searches exclude them inside FAISS (an ID selector, where the index takes one: HNSW does), so
  they cost little (k=50 over 100k items, HNSW32: p50 0.64 ms with 10,000 tombstones, 0.41 ms
  with none, against 6.7 ms when a search asked for k + tombstones results). Where the selector
  search comes back short, or the index takes no selector, a search asks for `fetch + tombstones`
  results and drops the dead ones. Either way it returns the best `fetch` live rows it finds.
  Past `max(compact_min, compact_ratio * rows in the index)` tombstones (defaults 1,000 and 10%)
  a background thread rebuilds the index from the live rows, off the lock: a copy of the index
  emptied at start-up (HNSW parameters, IVF centroids) gets the live rows of a snapshot, then the
  rows added meanwhile; under the lock it gets the last few, the rows deleted meanwhile become its
  tombstones, and it replaces the old index. Searches use the old index until then, never a
  half-built one; until then both indexes are in memory. The threshold keeps tombstones to a
  tenth of the graph, where they still cost little, while a rebuild (26 s for 90k items, HNSW32,
  one thread) runs at most once per 10% of the catalog deleted.

`state` copies what a snapshot needs (`service.snapshot`) and `ItemIndex.restore` rebuilds an
index from it: the FAISS index as it was (tombstones included), the rows' ids, which rows are
live, and the live rows' vectors (nothing reads a dead row's vector; a restored one is zero).

Searches run with `threads` OpenMP threads (default 1): on a small machine FAISS's thread team
costs more than it saves for the few queries of one micro-batch (3.2 ms vs 0.4 ms for one query
over 20k items on 2 cores), and it leaves a core to the event loop. A rebuild uses as many.
"""

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

log = logging.getLogger(__name__)

COMPACT_MIN = 1000
COMPACT_RATIO = 0.1
# search_filtered (its docstring has the measurements behind these)
FEW_EXCLUDES = 128  # excluded rows an unfiltered search fetches past instead of a selector
EXACT_MAX_ROWS = 20_000  # eligible rows scored exactly instead of searched in FAISS
OVERFETCH_MAX = 2048  # the most results asked of an index without selectors (GPU FAISS's limit)

_NO_ROWS = np.zeros(0, dtype=np.int64)
_NO_SCORES = np.zeros(0, dtype=np.float32)

SelectParams = Callable[[faiss.IDSelector, int, float], faiss.SearchParameters]


def place_index(index: faiss.Index) -> faiss.Index:
    """The index on every GPU FAISS sees, or unchanged on CPU."""
    if faiss.get_num_gpus() > 0:
        log.info("FAISS: %d GPU(s), moving the index to GPU", faiss.get_num_gpus())
        return faiss.index_cpu_to_all_gpus(index)
    log.info("FAISS: no GPU, searching on CPU")
    return index


@dataclass
class IndexState:
    """An `ItemIndex` at one moment: `faiss_index` serialized (`faiss.serialize_index`), every
    row's item id, which rows are live, the live rows' vectors (in row order) and the tombstones
    (dead rows still in the FAISS index)."""

    faiss_index: np.ndarray
    ids: list[str]
    live: np.ndarray
    live_vectors: np.ndarray
    tombstones: np.ndarray


class ItemIndex:
    """Thread-safe add / remove / search over item vectors with str item ids."""

    def __init__(self, index: faiss.Index, item_ids: Sequence[str], vectors: np.ndarray, threads: int = 1,
                 compact_min: int = COMPACT_MIN, compact_ratio: float = COMPACT_RATIO, *,
                 live: np.ndarray | None = None, tombstones: Iterable[int] = (),
                 exact_max_rows: int = EXACT_MAX_ROWS) -> None:
        """The bundle's `index` over `item_ids` (all live), or, with `live` and `tombstones`, an
        index restored from an `IndexState` (`restore`). `search_filtered` scores up to
        `exact_max_rows` eligible rows exactly instead of searching FAISS."""
        self._lock = threading.Lock()
        self._threads = threads
        self._ids: list[str] = list(item_ids)
        self._live = np.ones(len(self._ids), dtype=bool) if live is None else np.array(live, dtype=bool)
        self._rows: dict[str, int] = {self._ids[row]: row for row in np.flatnonzero(self._live).tolist()}
        self._vectors = np.array(vectors, dtype=np.float32, copy=True)
        cpu_index = _with_row_ids(index, self._vectors)
        self._index = place_index(cpu_index)
        self.on_gpu = faiss.get_num_gpus() > 0
        self._removes = _removes_ids(self._index)
        # what an index that cannot remove needs: an empty copy to rebuild from, and a way to skip
        self._empty = None if self._removes else _emptied(cpu_index)
        self._filters = not self._removes and _takes_selector(self._index)
        self._select = _selector_params(self._index)
        self._tombstones: set[int] = set(tombstones)
        self._skip: faiss.SearchParameters | None = None  # excludes the tombstones; rebuilt when they change
        self._compact_min = compact_min
        self._compact_ratio = compact_ratio
        self._exact_max_rows = exact_max_rows
        self._compactor: threading.Thread | None = None
        self.version = 0  # bumped on every change, for caches of derived data

    @classmethod
    def restore(cls, state: IndexState, threads: int = 1, compact_min: int = COMPACT_MIN,
                compact_ratio: float = COMPACT_RATIO) -> "ItemIndex":
        """The index `state` was taken from, as it was then."""
        vectors = np.zeros((len(state.ids), state.live_vectors.shape[1]), dtype=np.float32)
        vectors[state.live] = state.live_vectors
        return cls(faiss.deserialize_index(state.faiss_index), state.ids, vectors, threads, compact_min,
                   compact_ratio, live=state.live, tombstones=state.tombstones.tolist())

    def state(self) -> IndexState:
        """A copy of the index now, for a snapshot (under the lock: a copy of the FAISS index,
        the ids and the live rows' vectors)."""
        with self._lock:
            rows = len(self._ids)
            index = faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index
            live = self._live[:rows].copy()
            return IndexState(faiss.serialize_index(index), self._ids[:rows], live, self._vectors[:rows][live],
                              np.array(sorted(self._tombstones), dtype=np.int64))

    @property
    def size(self) -> int:
        """Live (searchable) items."""
        return len(self._rows)

    @property
    def n_rows(self) -> int:
        return len(self._ids)

    @property
    def tombstones(self) -> int:
        """Deleted rows still in the FAISS index (skipped by searches) until the next compaction."""
        return len(self._tombstones)

    @property
    def compacting(self) -> bool:
        return self._compactor is not None

    def row_of(self, item_id: str) -> int | None:
        return self._rows.get(item_id)

    def item_id(self, row: int) -> str:
        return self._ids[row]

    def rows_of(self, item_ids: Iterable[str]) -> set[int]:
        """The live rows of those of `item_ids` that are live."""
        rows = self._rows
        return {row for row in map(rows.get, item_ids) if row is not None}

    def vectors(self, rows: Sequence[int]) -> np.ndarray:
        with self._lock:
            return self._vectors[np.asarray(rows, dtype=np.int64)]

    def live_mask(self) -> np.ndarray:
        with self._lock:
            return self._live[: len(self._ids)].copy()

    def put(self, item_id: str, vector: np.ndarray) -> tuple[int, bool]:
        """Add (or replace) an item; returns its new row and whether it replaced a live one."""
        vector = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        with self._lock:
            old = self._rows.get(item_id)
            if old is not None:
                self._remove_row(old)
            row = len(self._ids)
            self._vectors = _grow(self._vectors, row + 1)
            self._live = _grow(self._live, row + 1)
            self._ids.append(item_id)
            self._vectors[row] = vector[0]
            self._live[row] = True
            self._index.add_with_ids(vector, np.array([row], dtype=np.int64))
            self._rows[item_id] = row
            self.version += 1
        return row, old is not None

    def remove(self, item_id: str) -> bool:
        """Withdraw an item; False when it was not live."""
        with self._lock:
            row = self._rows.get(item_id)
            if row is None:
                return False
            self._remove_row(row)
            self.version += 1
        return True

    def search(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """The best `fetch` live rows and their scores per query; -1 rows pad the end.

        Callers filter seen rows themselves, so they ask for k plus the rows they will drop.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        faiss.omp_set_num_threads(self._threads)  # per calling thread in OpenMP
        with self._lock:
            return self._search(queries, fetch)

    def search_filtered(self, query: np.ndarray, k: int, allowed: np.ndarray | None,
                        exclude: Collection[int]) -> tuple[np.ndarray, np.ndarray]:
        """The best `k` live rows for one query that are `allowed` (a mask over the rows; rows past
        its end are not; None: every row) and not in `exclude`, and their scores, best first:
        exactly min(k, eligible rows) of them, whatever the index and however few rows pass.

        - No filter and at most `FEW_EXCLUDES` live excluded rows: `search` for k + those rows,
          then drop them (what an unfiltered search costs).
        - At most `exact_max_rows` (`EXACT_MAX_ROWS`) eligible rows: the exact scores of those rows.
        - Else FAISS with the eligible rows as an ID selector (tombstones are not eligible), its
          search widened by the inverse of the eligible share of the live rows (HNSW's efSearch,
          IVF's nprobe), so that about as many eligible candidates are visited as an unfiltered
          search visits; an index without selectors asks for more results and drops the others.
          A result short of k (HNSW's graph or IVF's probed lists held too few eligible rows) falls
          back to the exact scores.

        The numbers behind the thresholds (100,000 64-d unit vectors, k=20, one thread, medians on a
        2-core AMD EPYC busy with other work; scripts/bench_filtered_search.py): exact scores of
        10% / 20% / 30% of the rows take 0.66 / 1.2 / 1.8 ms, HNSW32 with a selector and efSearch
        widened to 640 / 320 / 213 takes 3.4 / 1.9 / 1.3 ms (its efSearch left at 64, recall@20
        falls from 0.59 unfiltered to 0.44 at 10% and 0.25 at 1%), Flat with a selector 0.67 ms at
        10% and 2.3 ms at 30%: exact scores up to 20,000 rows. Measured at 100,000 rows: in a larger
        catalog the widened HNSW search grows with it, so the threshold errs towards FAISS there.
        Without a filter, a search for k + E rows beats a selector up to E = 128 (HNSW32: 0.62 vs
        0.61 ms; 1.6 vs 0.8 ms at E = 1,000).
        """
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        faiss.omp_set_num_threads(self._threads)
        with self._lock:
            rows = len(self._ids)
            excluded = np.fromiter((row for row in exclude if 0 <= row < rows), dtype=np.int64)
            excluded = np.unique(excluded[self._live[excluded]])
            if allowed is None and len(excluded) <= FEW_EXCLUDES:
                want = min(k, len(self._rows) - len(excluded))
                if want <= 0:
                    return _NO_ROWS, _NO_SCORES
                found, scores = self._search(query, want + len(excluded))
                keep = found[0] >= 0
                keep[keep] = ~np.isin(found[0][keep], excluded)
                if np.count_nonzero(keep) >= want:
                    return found[0][keep][:want], scores[0][keep][:want]
            eligible = self._live[:rows].copy()
            if allowed is not None:
                shared = min(len(allowed), rows)
                eligible[:shared] &= allowed[:shared]
                eligible[shared:] = False
            eligible[excluded] = False
            count = int(np.count_nonzero(eligible))
            want = min(k, count)
            if want <= 0:
                return _NO_ROWS, _NO_SCORES
            if count > self._exact_max_rows:
                found = self._search_eligible(query, want, eligible, count)
                if found is not None:
                    return found
            return self._exact(query, want, eligible)

    def wait_for_compaction(self, timeout: float | None = None) -> None:
        """Block until a running compaction (if any) has swapped its index in."""
        compactor = self._compactor
        if compactor is not None:
            compactor.join(timeout)

    def _search(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """`search` under the lock."""
        fetch = max(1, min(fetch, len(self._rows)))
        if not self._tombstones:
            scores, rows = self._index.search(queries, fetch)
            return rows, scores
        return self._search_live(queries, fetch)

    def _search_eligible(self, query: np.ndarray, want: int, eligible: np.ndarray,
                         count: int) -> tuple[np.ndarray, np.ndarray] | None:
        """FAISS's best `want` of the `count` eligible rows, or None when it finds fewer."""
        widen = len(self._rows) / count
        if self._select is not None:
            selector = faiss.IDSelectorBitmap(np.packbits(eligible, bitorder="little"))
            scores, rows = self._index.search(query, want, params=self._select(selector, want, widen))
        else:
            fetch = min(int(self._index.ntotal), OVERFETCH_MAX, int(np.ceil(2 * want * self._index.ntotal / count)))
            scores, rows = self._index.search(query, fetch)
        rows, scores = _first_live(rows, scores, eligible, want)
        if rows[0, -1] < 0:
            return None
        return rows[0], scores[0]

    def _exact(self, query: np.ndarray, want: int, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The best `want` eligible rows by their exact scores (FAISS on `threads` threads: numpy's
        matrix-vector product runs on every core past ~10,000 rows)."""
        rows = np.flatnonzero(eligible)
        scores, top = faiss.knn(query, np.take(self._vectors, rows, axis=0), want, metric=faiss.METRIC_INNER_PRODUCT)
        return rows[top[0]], scores[0]

    def _search_live(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """`search` past the tombstones. A selector search may come back short where tombstones
        crowd the query (HNSW's candidate list fills with them); those queries, and every query of
        an index without selectors, ask for `fetch + tombstones` and drop the dead rows."""
        skip = self._skip_tombstones() if self._filters else None
        if skip is not None:
            scores, rows = self._index.search(queries, fetch, params=skip)
            short = (rows < 0).any(axis=1)
            if not short.any():
                return rows, scores
        else:
            short = np.ones(len(queries), dtype=bool)
            rows = np.full((len(queries), fetch), -1, dtype=np.int64)
            scores = np.full((len(queries), fetch), -np.inf, dtype=np.float32)
        wide = min(fetch + len(self._tombstones), int(self._index.ntotal))
        wide_scores, wide_rows = self._index.search(queries[short], wide, params=skip)
        rows[short], scores[short] = _first_live(wide_rows, wide_scores, self._live, fetch)
        return rows, scores

    def _skip_tombstones(self) -> faiss.SearchParameters:
        if self._skip is None:
            dead = np.packbits(~self._live[: len(self._ids)], bitorder="little")
            self._skip = faiss.SearchParameters(sel=faiss.IDSelectorNot(faiss.IDSelectorBitmap(dead)))
        return self._skip

    def _remove_row(self, row: int) -> None:
        del self._rows[self._ids[row]]
        self._live[row] = False
        if self._removes:
            self._index.remove_ids(np.array([row], dtype=np.int64))
            return
        self._tombstones.add(row)
        self._skip = None
        threshold = max(self._compact_min, self._compact_ratio * self._index.ntotal)
        if self._compactor is None and len(self._tombstones) > threshold:
            log.info("index: %d tombstones in %d rows, compacting", len(self._tombstones), self._index.ntotal)
            self._compactor = threading.Thread(target=self._compact, name="index-compaction", daemon=True)
            self._compactor.start()

    def _compact(self) -> None:
        """Rebuild the index from the live rows and swap it in (see the module docstring)."""
        try:
            faiss.omp_set_num_threads(self._threads)
            fresh = faiss.clone_index(self._empty)
            filled: list[np.ndarray] = []
            done = 0
            for _ in range(2):  # a snapshot, then the rows added while it was being indexed
                with self._lock:
                    upto = len(self._ids)
                    rows = np.flatnonzero(self._live[done:upto]) + done
                self._fill(fresh, rows)
                filled.append(rows)
                done = upto
            if self.on_gpu:
                fresh = place_index(fresh)
            with self._lock:
                rows = np.flatnonzero(self._live[done : len(self._ids)]) + done
                fresh.add_with_ids(self._vectors[rows], rows)
                filled.append(rows)
                rows = np.concatenate(filled)
                before = len(self._tombstones)
                self._index = fresh
                self._select = _selector_params(fresh)
                self._tombstones = set(rows[~self._live[rows]].tolist())
                self._skip = None
            log.info("index compacted: %d tombstones -> %d, %d rows", before, len(self._tombstones), fresh.ntotal)
        except Exception:
            log.exception("index compaction failed; searches keep skipping the tombstones")
        finally:
            self._compactor = None

    def _fill(self, fresh: faiss.Index, rows: np.ndarray) -> None:
        """Add `rows` to the index being rebuilt, off the lock: a row's vector never changes once
        written, and `_grow` copies the rows it has into a new array."""
        fresh.add_with_ids(self._vectors[rows], rows)


def _with_row_ids(index: faiss.Index, vectors: np.ndarray) -> faiss.Index:
    """`index`, or the IVF index inside the bundle's IndexIDMap2, with the rows as its own ids."""
    if not isinstance(index, faiss.IndexIDMap2) or not _is_ivf(index.index):
        return index
    ivf = faiss.clone_index(index.index)  # the map owns its index: a copy outlives it safely
    if not np.array_equal(faiss.vector_to_array(index.id_map), np.arange(index.ntotal)):
        ivf.reset()  # the map held the rows in another order: index them again under their rows
        ivf.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    return ivf


def _is_ivf(index: faiss.Index) -> bool:
    """An IVF index, possibly behind pre-transforms (PCA, OPQ), which pass ids through."""
    return isinstance(_innermost(index), faiss.IndexIVF)


def _removes_ids(index: faiss.Index) -> bool:
    """Whether `index` implements `remove_ids` (removing an id that is not there tells)."""
    try:
        index.remove_ids(np.array([-1], dtype=np.int64))
    except RuntimeError:
        return False
    return True


def _takes_selector(index: faiss.Index) -> bool:
    """Whether `index` searches with an ID selector in plain SearchParameters (HNSW does)."""
    params = faiss.SearchParameters(sel=faiss.IDSelectorAll())
    try:
        index.search(np.zeros((1, index.d), dtype=np.float32), 1, params=params)
    except RuntimeError:
        return False
    return True


def _selector_params(index: faiss.Index) -> SelectParams | None:
    """How to search `index` with an ID selector for `want` results, its search widened by a
    factor (HNSW: efSearch, IVF: nprobe, both from the index's own setting); None where the
    index takes no selector."""
    base = _innermost(index)
    make: SelectParams
    if isinstance(base, faiss.IndexHNSW):
        ef = base.hnsw.efSearch

        def make(sel: faiss.IDSelector, want: int, widen: float) -> faiss.SearchParameters:
            return faiss.SearchParametersHNSW(sel=sel, efSearch=int(np.ceil(max(ef, want) * widen)))
    elif isinstance(base, faiss.IndexIVF):
        nprobe, nlist = base.nprobe, base.nlist

        def make(sel: faiss.IDSelector, want: int, widen: float) -> faiss.SearchParameters:
            return faiss.SearchParametersIVF(sel=sel, nprobe=min(nlist, int(np.ceil(nprobe * widen))))
    else:

        def make(sel: faiss.IDSelector, want: int, widen: float) -> faiss.SearchParameters:
            return faiss.SearchParameters(sel=sel)
    try:
        index.search(np.zeros((1, index.d), dtype=np.float32), 1, params=make(faiss.IDSelectorAll(), 1, 1.0))
    except RuntimeError:
        return None
    return make


def _innermost(index: faiss.Index) -> faiss.Index:
    """The index under id maps and pre-transforms."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2 | faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def _emptied(index: faiss.Index) -> faiss.Index:
    """A copy of `index` without its vectors: what it was trained on and its parameters stay."""
    empty = faiss.clone_index(index)
    empty.reset()
    return empty


def _first_live(rows: np.ndarray, scores: np.ndarray, live: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the first `fetch` of `rows` that are live, in order; -1 (score -inf) pads."""
    keep = rows >= 0
    keep[keep] = live[rows[keep]]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :fetch]
    kept = np.take_along_axis(keep, order, axis=1)
    return (np.where(kept, np.take_along_axis(rows, order, axis=1), -1),
            np.where(kept, np.take_along_axis(scores, order, axis=1), -np.inf).astype(np.float32))


def _grow(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` with room for `rows` rows; capacity doubles, so n appends copy O(n) rows in total."""
    if rows <= len(array):
        return array
    grown = np.zeros((max(rows, 2 * len(array), 16), *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown
