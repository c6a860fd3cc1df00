"""Latency and recall of ItemIndex.search_filtered by filter selectivity (Flat and HNSW32).

    .venv/bin/python scripts/bench_filtered_search.py [--rows 100000] [--dim 64] [--k 20] [--queries 300]

Random unit vectors, one query at a time, FAISS on one thread (the service's default). For each
index: the unfiltered `search` for reference, then `search_filtered` with no filter, with
excluded rows, and with a random filter passing 30%, 10%, 1% and 0.1% of the rows. Recall@k is
against the exact top k of the eligible rows (numpy). "path" is the one the docstring of
`search_filtered` picks for that many eligible rows. The cases take turns query by query, so
that other load on the machine hits them alike. Prints a markdown table and the machine; about
a minute on 2 cores (most of it building HNSW32).
"""

import argparse
import time
from collections.abc import Callable

import numpy as np
from bench_serve import machine, percentiles

from cliper.bundle import build_index
from service.index import EXACT_MAX_ROWS, FEW_EXCLUDES, ItemIndex

# (label, share of rows allowed or None for no filter, rows excluded)
CASES = [("no filter", None, 0), (f"no filter, {FEW_EXCLUDES} excluded", None, FEW_EXCLUDES),
         ("no filter, 1,000 excluded", None, 1000), ("30%", 0.3, 0), ("10%", 0.1, 0), ("1%", 0.01, 0), ("0.1%", 0.001, 0)]


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def path(filtered: bool, excluded: int, eligible: float) -> str:
    if not filtered and excluded <= FEW_EXCLUDES:
        return "search"
    return "exact" if eligible <= EXACT_MAX_ROWS else "FAISS + selector"


def best(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The k of `rows` with the highest `scores` (in no order)."""
    return rows if len(rows) <= k else rows[np.argpartition(-scores[rows], k)[:k]]


class Case:
    """One row of the table: a search per query, the exact answer of each, and the timings."""

    def __init__(self, label: str, route: str, eligible: list[np.ndarray], run: Callable[[int], np.ndarray],
                 scores: np.ndarray, k: int) -> None:
        """`scores`: every query's exact score of every row."""
        self.label, self.route, self.run = label, route, run
        self.count = float(np.mean([len(rows) for rows in eligible]))
        self.truth = [best(scores[query], rows, k) for query, rows in enumerate(eligible)]
        self.latencies: list[float] = []
        self.recalls: list[float] = []

    def time(self, query: int) -> None:
        started = time.perf_counter()
        rows = self.run(query)
        self.latencies.append(time.perf_counter() - started)
        truth = self.truth[query]
        self.recalls.append(len(np.intersect1d(rows, truth)) / len(truth) if len(truth) else float(len(rows) == 0))

    def line(self, name: str) -> str:
        timing = percentiles(self.latencies)
        return (f"| {name} | {self.label} | {self.count:,.0f} | {self.route} | {timing['p50_ms']:.3f} | "
                f"{timing['p99_ms']:.3f} | {np.mean(self.recalls):.3f} |")


def bench_index(name: str, index: ItemIndex, vectors: np.ndarray, queries: np.ndarray, k: int,
                rng: np.random.Generator) -> list[str]:
    rows = np.arange(len(vectors))
    scores = queries @ vectors.T
    cases = [Case("`search` (reference)", "search", [rows] * len(queries),
                  lambda q: index.search(queries[q : q + 1], k)[0][0], scores, k)]
    for label, share, excluded in CASES:
        allowed = [None if share is None else rng.random(len(rows)) < share for _ in queries]
        exclude = [set(rng.choice(len(rows), excluded, replace=False).tolist()) for _ in queries]
        eligible = [np.setdiff1d(rows if mask is None else np.flatnonzero(mask), list(skip))
                    for mask, skip in zip(allowed, exclude, strict=True)]
        route = path(share is not None, excluded, float(np.mean([len(e) for e in eligible])))
        cases.append(Case(label, route, eligible,
                          lambda q, a=allowed, e=exclude: index.search_filtered(queries[q], k, a[q], e[q])[0],
                          scores, k))
    for case in cases:
        case.run(0)  # warm-up
    for query in range(len(queries)):  # in turns
        for case in cases:
            case.time(query)
    return [case.line(name) for case in cases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ef-search", type=int, default=64, help="HNSW32's efSearch")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = unit(rng, args.rows, args.dim)
    queries = unit(rng, args.queries, args.dim)
    ids = [f"i{row}" for row in range(args.rows)]
    lines = [f"| index | filter | eligible rows | path | p50 ms | p99 ms | recall@{args.k} |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for factory, params in [("Flat", ""), ("HNSW32", f"efSearch={args.ef_search}")]:
        started = time.perf_counter()
        index, _ = build_index(vectors, factory, params)
        print(f"built {factory} over {args.rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
        name = f"{factory} ({params})" if params else factory
        lines += bench_index(name, ItemIndex(index, ids, vectors, threads=1), vectors, queries, args.k, rng)
    print(f"\n{args.rows:,} random {args.dim}-d unit vectors, k={args.k}, {args.queries} queries a row, "
          "one at a time, FAISS on 1 thread\n")
    print("\n".join(lines))
    print("\n" + "\n".join(f"- {key}: {value}" for key, value in machine().items()))


if __name__ == "__main__":
    main()
