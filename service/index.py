"""The live item index: the bundle's FAISS index plus ingested items, minus deleted ones.

FAISS ids are internal rows: the bundle's items are rows 0..n-1 and every ingested item (or
replacement) gets the next row. A str item_id maps to its live row. Rows are never reused or
renumbered, so the rest of the service (seen lists, the store follower) may hold on to them.
One lock guards every change and search, so concurrent use is safe.

Two FAISS indexes hold the rows. The bundle's index (the *base*: rows 0..n-1) is memory-mapped
from the bundle (`cliper.bundle`), so every worker process of a host shares one copy of it, and
is never changed (FAISS aborts the process on a change to a mapped index). Rows added online go
to a per-process *additions* index: an empty index of the base's kind (an HNSW graph with its
parameters, an IVF index with its centroids, Flat: `_emptied`), ids = rows. A search asks both
and merges their answers by score (with no additions, only the base). Ids and vectors are split
the same way: the bundle's `IdMap` and vectors (memory-mapped arrays, or computed per row from
them: `RowVectors`), and a list and a growing array for the added rows.

Removal depends on where the row is:

- A bundle row in the base becomes a tombstone.
- An added row is removed from the additions index where it can be (Flat, IVF: `remove_ids`;
  IVF indexes hold the rows as their own ids, so no `IndexIDMap2` is involved, whose
  `remove_ids` shifts the ids of an IVF index by one), else (HNSW) it becomes a tombstone.

Searches exclude tombstones inside FAISS (an ID selector, in the index's own search parameters
where it takes them: HNSW, IVF and Flat do), so they cost little (k=50 over 100k items, HNSW32:
p50 0.64 ms with 10,000 tombstones, 0.41 ms with none, against 6.7 ms when a search asked for
k + tombstones results). Where the selector search comes back short, or the index takes no
selector, a search asks for `fetch + tombstones` results and drops the dead ones. Either way it
returns the best `fetch` live rows it finds.

Past `max(compact_min, compact_ratio * rows in the indexes)` tombstones (defaults 1,000 and 10%)
a background thread rebuilds one index from the live rows, off the lock: an empty index of the
additions' kind gets the live rows of a snapshot, then the rows added meanwhile; under the lock
it gets the last few, the rows deleted meanwhile become its tombstones, and it replaces both
indexes. Searches use the old ones until then, never a half-built one; until then both are in
memory. From then on the process holds its own copy of the whole index: the base is no longer
shared, which a new bundle (or a restart without a snapshot) gives back. The threshold keeps
tombstones to a tenth of the graph, where they still cost little, while a rebuild (26 s for 90k
items, HNSW32, one thread) runs at most once per 10% of the catalog deleted.

`state` copies what a snapshot needs (`service.snapshot`) relative to the bundle: whether the
base is still searched, the additions index, the added rows' ids and live vectors, which rows are
live and the tombstones; `ItemIndex.restore` rebuilds the index from it and the bundle.

Searches run with `threads` OpenMP threads (default 1): on a small machine FAISS's thread team
costs more than it saves for the few queries of one micro-batch (3.2 ms vs 0.4 ms for one query
over 20k items on 2 cores), and it leaves a core to the event loop. A rebuild uses as many.
"""

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import faiss
import numpy as np

from cliper.ids import IdMap

log = logging.getLogger(__name__)

COMPACT_MIN = 1000
COMPACT_RATIO = 0.1
# search_filtered (its docstring has the measurements behind these)
FEW_EXCLUDES = 128  # excluded rows an unfiltered search fetches past instead of a selector
EXACT_MAX_ROWS = 20_000  # eligible rows scored exactly instead of searched in FAISS
OVERFETCH_MAX = 2048  # the most results asked of an index without selectors (GPU FAISS's limit)
FILL_ROWS = 65_536  # rows added to a rebuilt index at a time (their vectors are read or computed per block)

_NO_ROWS = np.zeros(0, dtype=np.int64)
_NO_SCORES = np.zeros(0, dtype=np.float32)

SelectParams = Callable[[faiss.IDSelector, int, float], faiss.SearchParameters]


class RowVectors(Protocol):
    """The bundle's item vectors by row: an array (memory-mapped or not), or an object that
    computes the rows asked for (`service.catalog.SearchVectors`)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, rows: np.ndarray, /) -> np.ndarray: ...


def place_index(index: faiss.Index) -> faiss.Index:
    """The index on every GPU FAISS sees, or unchanged on CPU."""
    if faiss.get_num_gpus() > 0:
        log.info("FAISS: %d GPU(s), moving the index to GPU", faiss.get_num_gpus())
        return faiss.index_cpu_to_all_gpus(index)
    log.info("FAISS: no GPU, searching on CPU")
    return index


@dataclass
class IndexState:
    """An `ItemIndex` at one moment, relative to its bundle (whose ids and vectors are not copied):
    whether the bundle's index is still searched (`uses_base`; not after a compaction), the
    additions index serialized (`faiss.serialize_index`), the ids of the rows past the bundle's,
    which rows are live (every row), the live added rows' vectors (in row order) and the
    tombstones (dead rows still in an index)."""

    uses_base: bool
    additions: np.ndarray
    ids: list[str]
    live: np.ndarray
    live_vectors: np.ndarray
    tombstones: np.ndarray


class _Part:
    """One of the FAISS indexes of an `ItemIndex` (its search returns rows), with how to search it
    with an ID selector (None: it takes none) and whether it removes ids."""

    def __init__(self, index: faiss.Index, removes: bool) -> None:
        self.index = index
        self.select = _selector_params(index)
        self.removes = removes


class ItemIndex:
    """Thread-safe add / remove / search over item vectors with str item ids."""

    def __init__(self, index: faiss.Index, item_ids: Sequence[str], vectors: RowVectors, threads: int = 1,
                 compact_min: int = COMPACT_MIN, compact_ratio: float = COMPACT_RATIO, *,
                 exact_max_rows: int = EXACT_MAX_ROWS) -> None:
        """The bundle's `index` (whose search returns rows 0..n-1; never changed) over `item_ids`
        (an `IdMap`, or any sequence of ids) and their `vectors`. `search_filtered` scores up to
        `exact_max_rows` eligible rows exactly instead of searching FAISS."""
        self._lock = threading.Lock()
        self._threads = threads
        self._base_ids = IdMap.of(item_ids)
        self._n_base = len(self._base_ids)
        if index.ntotal != self._n_base or vectors.shape[0] != self._n_base:
            raise ValueError(f"the index holds {index.ntotal} rows and there are {vectors.shape[0]} vectors, "
                             f"expected one per item id ({self._n_base})")
        self._base_vectors = vectors
        self._ids: list[str] = []  # of the rows past the bundle's
        self._rows: dict[str, int] = {}  # item id -> live row, for the rows past the bundle's
        self._vectors = np.zeros((0, index.d), dtype=np.float32)  # of the rows past the bundle's
        self._live = np.ones(self._n_base, dtype=bool)
        self._size = self._n_base
        self.on_gpu = faiss.get_num_gpus() > 0
        self._template = _emptied(_unmapped(index))  # what a new additions index is a copy of
        self._base: _Part | None = _Part(place_index(index), removes=False)
        self._added = self._part(self._new_index())
        self._tombstones: set[int] = set()
        self._skip: faiss.IDSelector | None = None  # selects the live rows; rebuilt when a row dies
        self._compact_min = compact_min
        self._compact_ratio = compact_ratio
        self._exact_max_rows = exact_max_rows
        self._compactor: threading.Thread | None = None
        self.version = 0  # bumped on every change, for caches of derived data

    @classmethod
    def restore(cls, state: IndexState, index: faiss.Index, item_ids: Sequence[str], vectors: RowVectors,
                threads: int = 1, compact_min: int = COMPACT_MIN, compact_ratio: float = COMPACT_RATIO) -> "ItemIndex":
        """The index `state` was taken from, over the same bundle (`index`, `item_ids`, `vectors`)."""
        restored = cls(index, item_ids, vectors, threads, compact_min, compact_ratio)
        n = restored._n_base
        if len(state.live) != n + len(state.ids) or len(state.live_vectors) != np.count_nonzero(state.live[n:]):
            raise ValueError(f"the state has {len(state.live)} rows, {len(state.ids)} of them added and "
                             f"{len(state.live_vectors)} live added vectors, over a bundle of {n} items")
        restored._ids = list(state.ids)
        restored._vectors = np.zeros((len(state.ids), restored._vectors.shape[1]), dtype=np.float32)
        restored._vectors[state.live[n:]] = state.live_vectors
        restored._live = np.array(state.live, dtype=bool)
        restored._size = int(np.count_nonzero(restored._live))
        restored._rows = {item_id: n + i for i, item_id in enumerate(state.ids) if state.live[n + i]}
        if not state.uses_base:
            restored._base = None
        restored._added = restored._part(faiss.deserialize_index(state.additions))
        restored._tombstones = set(state.tombstones.tolist())
        return restored

    def state(self) -> IndexState:
        """A copy of the index now, relative to the bundle, for a snapshot (under the lock: a copy
        of the additions index, the added rows' ids and live vectors, and the live mask)."""
        with self._lock:
            live = self._live[: self.n_rows].copy()
            additions = faiss.index_gpu_to_cpu(self._added.index) if self.on_gpu else self._added.index
            added = len(self._ids)
            return IndexState(self._base is not None, faiss.serialize_index(additions), list(self._ids), live,
                              self._vectors[:added][live[self._n_base :]],
                              np.array(sorted(self._tombstones), dtype=np.int64))

    @property
    def size(self) -> int:
        """Live (searchable) items."""
        return self._size

    @property
    def n_rows(self) -> int:
        return self._n_base + len(self._ids)

    @property
    def tombstones(self) -> int:
        """Deleted rows still in a FAISS index (skipped by searches) until the next compaction."""
        return len(self._tombstones)

    @property
    def compacting(self) -> bool:
        return self._compactor is not None

    @property
    def shares_base(self) -> bool:
        """Whether the bundle's index is still searched (no compaction replaced it)."""
        return self._base is not None

    def row_of(self, item_id: str) -> int | None:
        row = self._rows.get(item_id)
        if row is None and (row := self._base_ids.row(item_id)) is not None and not self._live[row]:
            return None
        return row

    def item_id(self, row: int) -> str:
        return self._base_ids[row] if row < self._n_base else self._ids[row - self._n_base]

    def live_rows(self, item_ids: Sequence[str]) -> list[int]:
        """The live row of each of `item_ids` (-1 where it is not live): one look-up in the
        bundle's ids for all of those not added since. Plain Python: a request's few ids (its
        user's seen items) cost less so than through numpy's per-call overhead."""
        rows = [self._rows.get(item_id, -1) for item_id in item_ids]
        rest = [i for i, row in enumerate(rows) if row < 0]
        if rest:
            live = self._live
            for i, row in zip(rest, self._base_ids.rows([item_ids[i] for i in rest]), strict=True):
                if row >= 0 and live[row]:
                    rows[i] = row
        return rows

    def rows_of(self, item_ids: Iterable[str]) -> set[int]:
        """The live rows of those of `item_ids` that are live."""
        return {row for row in self.live_rows(list(item_ids)) if row >= 0}

    def vectors(self, rows: Sequence[int]) -> np.ndarray:
        with self._lock:
            return self._row_vectors(np.asarray(rows, dtype=np.int64))

    def live_mask(self) -> np.ndarray:
        with self._lock:
            return self._live[: self.n_rows].copy()

    def put(self, item_id: str, vector: np.ndarray) -> tuple[int, bool]:
        """Add (or replace) an item; returns its new row and whether it replaced a live one."""
        vector = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        with self._lock:
            old = self.row_of(item_id)
            if old is not None:
                self._remove_row(old)
            row = self.n_rows
            added = len(self._ids)
            self._vectors = grow(self._vectors, added + 1)
            self._live = grow(self._live, row + 1)
            self._ids.append(item_id)
            self._vectors[added] = vector[0]
            self._live[row] = True
            self._added.index.add_with_ids(vector, np.array([row], dtype=np.int64))
            self._rows[item_id] = row
            self._size += 1
            self.version += 1
        return row, old is not None

    def remove(self, item_id: str) -> bool:
        """Withdraw an item; False when it was not live."""
        with self._lock:
            row = self.row_of(item_id)
            if row is None:
                return False
            self._rows.pop(item_id, None)
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
            rows = self.n_rows
            excluded = np.fromiter((row for row in exclude if 0 <= row < rows), dtype=np.int64)
            excluded = np.unique(excluded[self._live[excluded]])
            if allowed is None and len(excluded) <= FEW_EXCLUDES:
                want = min(k, self._size - len(excluded))
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

    def _parts(self) -> list[_Part]:
        """The indexes to search: the base (while used) and the additions (once they hold rows)."""
        parts = [] if self._base is None else [self._base]
        return parts + [self._added] if self._added.index.ntotal or not parts else parts

    def _search(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """`search` under the lock."""
        fetch = max(1, min(fetch, self._size))
        if not self._tombstones:
            answers = [part.index.search(queries, fetch) for part in self._parts()]
            return _merged([(rows, scores) for scores, rows in answers], fetch)
        return _merged([self._search_live(part, queries, fetch) for part in self._parts()], fetch)

    def _search_eligible(self, query: np.ndarray, want: int, eligible: np.ndarray,
                         count: int) -> tuple[np.ndarray, np.ndarray] | None:
        """FAISS's best `want` of the `count` eligible rows, or None when it finds fewer."""
        widen = self._size / count
        answers = []
        for part in self._parts():
            if part.select is not None:
                selector = faiss.IDSelectorBitmap(np.packbits(eligible, bitorder="little"))
                scores, rows = part.index.search(query, want, params=part.select(selector, want, widen))
            else:
                total = int(part.index.ntotal)
                fetch = min(total, OVERFETCH_MAX, int(np.ceil(2 * want * total / count)))
                scores, rows = part.index.search(query, max(fetch, 1))
            answers.append((rows, scores))
        rows, scores = _merged(answers, sum(rows.shape[1] for rows, _ in answers))
        rows, scores = _first_live(rows, scores, eligible, want)
        if rows[0, -1] < 0:
            return None
        return rows[0], scores[0]

    def _exact(self, query: np.ndarray, want: int, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The best `want` eligible rows by their exact scores (FAISS on `threads` threads: numpy's
        matrix-vector product runs on every core past ~10,000 rows)."""
        rows = np.flatnonzero(eligible)
        scores, top = faiss.knn(query, self._row_vectors(rows), want, metric=faiss.METRIC_INNER_PRODUCT)
        return rows[top[0]], scores[0]

    def _row_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of `rows`: the bundle's and the added ones'."""
        bundle = rows < self._n_base
        if bundle.all():
            return np.asarray(self._base_vectors[rows], dtype=np.float32)
        vectors = np.empty((len(rows), self._vectors.shape[1]), dtype=np.float32)
        if bundle.any():
            vectors[bundle] = self._base_vectors[rows[bundle]]
        vectors[~bundle] = self._vectors[rows[~bundle] - self._n_base]
        return vectors

    def _search_live(self, part: _Part, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """One index's answer past the tombstones. A selector search may come back short where
        tombstones crowd the query (HNSW's candidate list fills with them); those queries, and
        every query of an index without selectors, ask for `fetch + tombstones` and drop the dead rows."""
        skip = None if part.select is None else part.select(self._skip_dead(), fetch, 1.0)
        if skip is not None:
            scores, rows = part.index.search(queries, fetch, params=skip)
            short = (rows < 0).any(axis=1)
            if not short.any() or part.index.ntotal <= fetch:
                return rows, scores
        else:
            short = np.ones(len(queries), dtype=bool)
            rows = np.full((len(queries), fetch), -1, dtype=np.int64)
            scores = np.full((len(queries), fetch), -np.inf, dtype=np.float32)
        wide = min(fetch + len(self._tombstones), int(part.index.ntotal))
        wide_scores, wide_rows = part.index.search(queries[short], max(wide, 1), params=skip)
        rows[short], scores[short] = _first_live(wide_rows, wide_scores, self._live, fetch)
        return rows, scores

    def _skip_dead(self) -> faiss.IDSelector:
        """A selector of the live rows (everything but the dead ones), kept until a row dies."""
        if self._skip is None:
            dead = np.packbits(~self._live[: self.n_rows], bitorder="little")
            self._skip = faiss.IDSelectorNot(faiss.IDSelectorBitmap(dead))
        return self._skip

    def _remove_row(self, row: int) -> None:
        self._live[row] = False
        self._size -= 1
        self._skip = None
        if (self._base is None or row >= self._n_base) and self._added.removes:
            self._added.index.remove_ids(np.array([row], dtype=np.int64))
            return
        self._tombstones.add(row)
        total = sum(part.index.ntotal for part in self._parts())
        threshold = max(self._compact_min, self._compact_ratio * total)
        if self._compactor is None and len(self._tombstones) > threshold:
            log.info("index: %d tombstones in %d rows, compacting", len(self._tombstones), total)
            self._compactor = threading.Thread(target=self._compact, name="index-compaction", daemon=True)
            self._compactor.start()

    def _new_index(self) -> faiss.Index:
        """An empty additions index on the CPU (ids = rows): a copy of the template; IVF indexes
        take ids themselves, the others get an `IndexIDMap2`."""
        index = faiss.clone_index(self._template)
        return index if _is_ivf(index) else faiss.IndexIDMap2(index)

    def _part(self, additions: faiss.Index) -> _Part:
        """`additions` (a CPU index) placed where searches run, as a part."""
        additions = place_index(additions)
        return _Part(additions, _removes_ids(additions))

    def _compact(self) -> None:
        """Rebuild one index from the live rows and swap it in (see the module docstring)."""
        try:
            faiss.omp_set_num_threads(self._threads)
            index = self._new_index()
            filled: list[np.ndarray] = []
            done = 0
            for _ in range(2):  # a snapshot, then the rows added while it was being indexed
                with self._lock:
                    upto = self.n_rows
                    rows = np.flatnonzero(self._live[done:upto]) + done
                self._fill(index, rows)
                filled.append(rows)
                done = upto
            fresh = self._part(index)
            with self._lock:
                rows = np.flatnonzero(self._live[done : self.n_rows]) + done
                fresh.index.add_with_ids(self._row_vectors(rows), rows)
                filled.append(rows)
                rows = np.concatenate(filled)
                before = len(self._tombstones)
                self._base = None
                self._added = fresh
                dead = rows[~self._live[rows]]
                self._tombstones = set(dead.tolist())
                if fresh.removes and len(dead):
                    fresh.index.remove_ids(dead)
                    self._tombstones = set()
                self._skip = None
            log.info("index compacted: %d tombstones -> %d, %d rows", before, len(self._tombstones),
                     fresh.index.ntotal)
        except Exception:
            log.exception("index compaction failed; searches keep skipping the tombstones")
        finally:
            self._compactor = None

    def _fill(self, fresh: faiss.Index, rows: np.ndarray) -> None:
        """Add `rows` to the index being rebuilt, off the lock, a block at a time: a row's vector
        never changes once written, and `grow` copies the rows it has into a new array."""
        for start in range(0, len(rows), FILL_ROWS):
            block = rows[start : start + FILL_ROWS]
            fresh.add_with_ids(self._row_vectors(block), block)


def _merged(answers: list[tuple[np.ndarray, np.ndarray]], fetch: int) -> tuple[np.ndarray, np.ndarray]:
    """The best `fetch` of several indexes' (rows, scores) per query, best first; -1 pads."""
    if len(answers) == 1:
        rows, scores = answers[0]
        return rows[:, :fetch], scores[:, :fetch]
    rows = np.concatenate([rows for rows, _ in answers], axis=1)
    scores = np.concatenate([scores for _, scores in answers], axis=1)
    scores[rows < 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :fetch]
    queries = np.arange(len(rows))[:, None]
    return rows[queries, order], scores[queries, order]


def _is_ivf(index: faiss.Index) -> bool:
    """An IVF index, possibly behind pre-transforms (PCA, OPQ), which pass ids through."""
    return isinstance(_innermost(index), faiss.IndexIVF)


def _removes_ids(index: faiss.Index) -> bool:
    """Whether `index` implements `remove_ids` (removing an id that is not there tells). Only for
    an index of this process's own: on a memory-mapped one a removal aborts the process."""
    try:
        index.remove_ids(np.array([-1], dtype=np.int64))
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


def _unmapped(index: faiss.Index) -> faiss.Index:
    """The index under id maps."""
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2):
        index = faiss.downcast_index(index.index)
    return index


def _emptied(index: faiss.Index) -> faiss.Index:
    """A copy of `index` without its vectors: what it was trained on and its parameters stay.
    FAISS's copy of a memory-mapped index keeps the mapped parts as views of the file (so it
    costs little), which `reset` would abort on: they are swapped for empty ones first."""
    empty = faiss.clone_index(index)
    _own_storage(empty)
    empty.reset()
    return empty


def _own_storage(index: faiss.Index) -> None:
    """Swap the parts that FAISS memory-maps (`IO_FLAG_MMAP_IFC`: flat codes, HNSW neighbour
    lists, IVF inverted lists) for empty ones of the index's own, wherever they are inside it."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2 | faiss.IndexPreTransform):
        _own_storage(index.index)
    elif isinstance(index, faiss.IndexRefine):
        _own_storage(index.base_index)
        _own_storage(index.refine_index)
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.neighbors = faiss.MaybeOwnedVectorInt32()
        _own_storage(index.storage)
    elif isinstance(index, faiss.IndexIVF):
        lists = faiss.ArrayInvertedLists(index.nlist, index.code_size)
        index.replace_invlists(lists, True)
        lists.this.disown()  # the index owns (and deletes) it now
    elif isinstance(index, faiss.IndexFlatCodes):
        index.codes = faiss.MaybeOwnedVectorUInt8()


def _first_live(rows: np.ndarray, scores: np.ndarray, live: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the first `fetch` of `rows` that are live, in order; -1 (score -inf) pads."""
    keep = rows >= 0
    keep[keep] = live[rows[keep]]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :fetch]
    kept = np.take_along_axis(keep, order, axis=1)
    return (np.where(kept, np.take_along_axis(rows, order, axis=1), -1),
            np.where(kept, np.take_along_axis(scores, order, axis=1), -np.inf).astype(np.float32))


def grow(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` with room for `rows` rows; capacity doubles, so n appends copy O(n) rows in total."""
    if rows <= len(array):
        return array
    grown = np.zeros((max(rows, 2 * len(array), 16), *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown
