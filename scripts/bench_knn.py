"""Cost of the content kNN table as the catalog grows (issue 17): N items, d-dim features, top k.

The features are synthetic clustered unit vectors (offline/data/clustered_vectors.py): Zipf-sized
clusters, a shared direction and a decaying spectrum, like CLIP embeddings of a catalog, not
uniform noise, on which every index looks either hopeless or trivially good. Every item is a
key (warm), as in a catalog without cold items.

Methods, each run in a fresh process (so peak RSS is its own, features included):
- exact: `IndexFlatIP` over every row (offline/models/knn.py below its threshold); skipped above
  --exact-max items, where it would take hours;
- ivf: the module's approximate table, the IVF self-join with its default parameters;
- hnsw: FAISS `IndexHNSWFlat` (M, efConstruction, efSearch options), built on every row, then
  searched by every row: the alternative measured before choosing IVF.

Recall@k is against exact search: over every row when the exact table was built at that N,
else over --recall-rows sampled rows (exact search of those rows only). Times are wall seconds
with --threads threads (CPU seconds beside them: on a shared machine, a loaded core shows as a
wall time above CPU / threads).

    .venv/bin/python scripts/bench_knn.py [--sizes 10000,100000,1000000] [--json build/bench-knn.json]
"""

import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from offline.data.clustered_vectors import clustered_unit_vectors  # noqa: E402
from offline.models.knn import (  # noqa: E402
    EXACT_MAX_KEYS,
    IVFParams,
    exact_search,
    faiss_threads,
    nearest_key_rows,
    recall_at_k,
)

GB = 2**30
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def hnsw_table(unit: np.ndarray, k: int, m: int, ef_construction: int, ef_search: int) -> np.ndarray:
    """Every row's top-`k` by an HNSW graph over all rows (searched by every row)."""
    index = faiss.IndexHNSWFlat(unit.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(unit)
    index.hnsw.efSearch = ef_search
    return index.search(unit, k)[1]


def run_method(features_path: str, method: str, k: int, threads: int, hnsw: tuple[int, int, int],
               table_path: str) -> dict[str, Any]:
    """One method in this (fresh) process: its table saved to `table_path`, its time and peak RSS
    (and the RSS before the features were loaded: the interpreter, torch and FAISS)."""
    start_rss = peak_rss()
    features = np.load(features_path)
    keys = np.arange(len(features))
    wall, cpu = time.perf_counter(), time.process_time()
    if method == "hnsw":
        with faiss_threads(threads):
            rows = hnsw_table(features, k, *hnsw)
        label = "HNSW{},Flat efC={} efSearch={}".format(*hnsw)
    else:
        table = nearest_key_rows(features, keys, k, threads=threads,
                                 exact_max_keys=len(keys) if method == "exact" else 0)
        rows, label = table.rows, table.method
    seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    np.save(table_path, rows)
    peak = peak_rss()
    return {"method": label, "seconds": seconds, "cpu_seconds": cpu_seconds, "start_rss_gb": start_rss / GB,
            "peak_rss_gb": peak / GB}


def peak_rss() -> int:
    """This process's peak resident memory in bytes: VmHWM, which starts afresh at exec (unlike
    getrusage's ru_maxrss, which keeps the forking parent's)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line.split()[1] for line in status if line.startswith("VmHWM:"))) * 1024


def in_fresh_process(*args: Any) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_method, args)


def bench_size(n: int, dim: int, k: int, methods: list[str], exact_max: int, recall_rows: int, threads: int,
               hnsw: tuple[int, int, int], work: Path) -> list[dict[str, Any]]:
    features_path, table_path = work / f"features-{n}.npy", work / f"table-{n}.npy"
    started = time.perf_counter()
    np.save(features_path, clustered_unit_vectors(n, dim))
    print(f"N={n}: features generated in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    if "exact" in methods and n > exact_max:
        methods = [m for m in methods if m != "exact"]
    truth, truth_rows, results = None, None, []
    for method in sorted(methods, key=lambda m: m != "exact"):  # exact first: its table is the truth
        result = in_fresh_process(str(features_path), method, k, threads, hnsw, str(table_path))
        rows = np.load(table_path)
        if method == "exact":
            truth, truth_rows = rows, np.arange(n)
        elif truth is None:
            unit = np.load(features_path)
            truth_rows = np.random.default_rng(1).choice(n, min(recall_rows, n), replace=False)
            with faiss_threads(threads):
                truth = exact_search(unit, unit[truth_rows], np.arange(n), k, threads)
            del unit
        result.update(n=n, dim=dim, k=k, recall=recall_at_k(rows[truth_rows], truth),
                      recall_rows=len(truth_rows))
        print(json.dumps(result), file=sys.stderr, flush=True)
        results.append(result)
    features_path.unlink()
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| N | d | k | method | build s (wall) | CPU s | peak RSS GB (at start) | recall@k | rows checked |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['n']:,} | {r['dim']} | {r['k']} | {r['method']} | {r['seconds']:.1f} | {r['cpu_seconds']:.0f} | "
              f"{r['peak_rss_gb']:.2f} ({r['start_rss_gb']:.2f}) | {r['recall']:.4f} | {r['recall_rows']:,} |"
              for r in results]
    return "\n".join(lines)


@app.command()
def main(
    sizes: str = typer.Option("10000,100000,1000000", help="comma-separated numbers of items"),
    dim: int = typer.Option(512, min=1),
    k: int = typer.Option(10, min=1),
    methods: str = typer.Option("exact,ivf,hnsw", help="comma-separated: exact, ivf, hnsw"),
    exact_max: int = typer.Option(100_000, help="the exact method is skipped above this many items"),
    recall_rows: int = typer.Option(10_000, min=1, help="sampled rows checked when no exact table was built"),
    threads: int = typer.Option(os.cpu_count() or 1, min=1),
    hnsw_m: int = typer.Option(32, min=2),
    hnsw_ef_construction: int = typer.Option(40, min=1),
    hnsw_ef_search: int = typer.Option(48, min=1),
    json_path: Path | None = typer.Option(None, "--json", help="also write the results here"),
) -> None:
    from scripts.bench_serve import machine

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    if unknown := set(chosen) - {"exact", "ivf", "hnsw"}:
        raise typer.BadParameter(f"unknown methods {sorted(unknown)}: use exact, ivf, hnsw", param_hint="--methods")
    host = machine()
    print(json.dumps(host, indent=1), file=sys.stderr)
    hnsw = (hnsw_m, hnsw_ef_construction, hnsw_ef_search)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-knn-") as tmp:
        for n in (int(s) for s in sizes.split(",")):
            results += bench_size(n, dim, k, chosen, exact_max, recall_rows, threads, hnsw, Path(tmp))
    table = markdown(results)
    print(f"{table}\n\nthe module's exact threshold: {EXACT_MAX_KEYS:,} keys; IVF defaults {IVFParams()}; "
          f"load average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"machine": host, "results": results}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    app()
