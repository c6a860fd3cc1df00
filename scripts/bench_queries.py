"""Latency of filtered recommendations, similar items and search (issue 16), over real HTTP.

Uses the serving benchmark's bundle (100,000 items with synthetic vectors and realistic-cost
encoders, `offline/export/synthetic_bundle.py`; built once, shared with scripts/bench_serve.py).
Its items' fields make filters of known selectivity (`selectivity_fields`): `categories:all`
(100%), `categories:decile-3` (10%), `categories:percentile-42` (1%), `brand:brand-7` (0.1%).
One `python -m service` worker, one client sending requests one after another (keep-alive), so
each number is the latency of one request on an otherwise idle service; the cells take turns
request by request, so other load on the machine hits them alike. Every filtered answer is checked:
exactly k items, every one passing the filter; recall@k against the exact ranking among the
passing items (brute force over the bundle's vectors) is printed beside the latency.

    .venv/bin/python scripts/bench_queries.py [--requests 200] [--json build/bench-queries.json]
"""

import base64
import io
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import typer
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.bench_serve import _build, machine, percentiles, serve  # noqa: E402

FILTERS = {"none": None, "100%": "categories:all", "10%": "categories:decile-3", "1%": "categories:percentile-42",
           "0.1%": "brand:brand-7"}
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def share_passing(spec: str | None, n_items: int) -> np.ndarray:
    """Which bundle rows pass `spec`, by the rule that made the fields (`selectivity_fields`)."""
    rows = np.arange(n_items)
    if spec is None or spec == "categories:all":
        return np.ones(n_items, dtype=bool)
    field, value = spec.split(":")
    number = int(value.rsplit("-", 1)[1])
    modulus = {"decile": 10, "percentile": 100, "brand": 1000}[value.rsplit("-", 1)[0]]
    return rows % modulus == number


def interleaved(client: httpx.Client, cells: dict[tuple[str, str], list[tuple[str, str, dict]]]
                ) -> dict[tuple[str, str], tuple[list[float], list[dict]]]:
    """Every cell's requests, one after another, the cells taking turns request by request, so
    that load from other jobs on the machine hits every cell alike. Per cell: latencies (the
    first tenth, a warm-up, left out) and answers."""
    results: dict[tuple[str, str], tuple[list[float], list[dict]]] = {cell: ([], []) for cell in cells}
    for turn in range(max(len(requests) for requests in cells.values())):
        for cell, requests in cells.items():
            if turn >= len(requests):
                continue
            method, path, options = requests[turn]
            start = time.perf_counter()
            response = client.request(method, path, **options)
            results[cell][0].append(time.perf_counter() - start)
            if response.status_code != 200:
                raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
            results[cell][1].append(response.json())
    return {cell: (latencies[len(latencies) // 10 :], bodies) for cell, (latencies, bodies) in results.items()}


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / max(1, len(t)) for f, t in zip(found, truth, strict=True)]))


def exact_top(vectors: np.ndarray, queries: np.ndarray, passing: np.ndarray, exclude: list[set[int]],
              k: int, ids: list[str]) -> list[list[str]]:
    scores = queries @ vectors.T
    scores[:, ~passing] = -np.inf
    tops = []
    for row, left_out in zip(scores, exclude, strict=True):
        row[list(left_out)] = -np.inf
        tops.append([ids[i] for i in np.argsort(-row)[:k] if np.isfinite(row[i])])
    return tops


@app.command()
def main(
    out_dir: Path = typer.Option(ROOT / "build" / "bench-serve", help="the benchmark bundle and service data"),
    items: int = typer.Option(100_000),
    users: int = typer.Option(50_000),
    index: str = typer.Option("HNSW32"),
    search_params: str = typer.Option("efSearch=128"),
    requests: int = typer.Option(200, help="requests per cell (the first tenth warms up)"),
    k: int = typer.Option(20),
    port: int = typer.Option(8766),
    json_out: Path | None = typer.Option(None, "--json"),
) -> None:
    from cliper.bundle import read_bundle

    out_dir.mkdir(parents=True, exist_ok=True)
    bundle_dir = out_dir / f"bundle-{items}-{index.replace(',', '_')}-{search_params.replace('=', '')}"
    if not (bundle_dir / "manifest.json").is_file() or json.loads(
            (bundle_dir / "manifest.json").read_text()).get("format_version") != 2:
        print(f"building a bundle of {items} items in {bundle_dir}", flush=True)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(_build, bundle_dir, items, users, index, search_params).result()
    bundle = read_bundle(bundle_dir, verify=False)
    info = machine()
    rng = np.random.default_rng(0)
    user_rows = rng.choice(len(bundle.user_ids), requests, replace=False)
    item_rows = rng.choice(len(bundle.item_ids), requests, replace=False)
    image = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(image, format="JPEG")
    picture = base64.b64encode(image.getvalue()).decode()
    text = "a sturdy ceramic espresso cup"
    searches = {
        "search: text": {"text": text, "k": k},
        "search: text, 1% filter": {"text": text, "k": k, "filters": [FILTERS["1%"]]},
        "search: image": {"image_base64": picture, "k": k},
        "search: text + image": {"text": text, "image_base64": picture, "k": k},
        "search: text + user blend": {"text": text, "k": k, "user_id": "user-7"},
    }
    cells: dict[tuple[str, str], list[tuple[str, str, dict]]] = {}
    for share, spec in FILTERS.items():
        params = {"k": k, **({"filter": spec} if spec else {})}
        cells["recommendations", share] = [
            ("GET", f"/users/{bundle.user_ids[u]}/recommendations", {"params": params}) for u in user_rows]
        cells["similar items", share] = [
            ("GET", f"/items/{bundle.item_ids[i]}/similar", {"params": params}) for i in item_rows]
    for name, body in searches.items():
        cells[name, ""] = [("POST", "/search", {"json": body})] * max(20, requests // 4)
    with serve(bundle_dir, out_dir, port, "--workers", "1") as base, httpx.Client(base_url=base, timeout=60) as client:
        results = interleaved(client, cells)
    rows: list[dict[str, Any]] = []
    for (endpoint, share), (latency, bodies) in results.items():
        row = {"endpoint": endpoint, "filter": share, **percentiles(latency)}
        if share:
            found = [[hit["item_id"] for hit in body["items"]] for body in bodies]
            passing = share_passing(FILTERS[share], len(bundle.item_ids))
            check_answers(found, passing, bundle.item_ids, k, endpoint, share)
            if endpoint == "recommendations":
                excluded = [set(bundle.seen.items_of(u).tolist()) for u in user_rows]
                queries = bundle.user_vectors[user_rows]
            else:
                excluded, queries = [{i} for i in item_rows], bundle.item_vectors[item_rows]
            truth = exact_top(bundle.item_vectors, queries, passing, excluded, k, bundle.item_ids)
            row[f"recall@{k}"] = recall(found, truth)
        rows.append(row)
    print_table(rows, info, bundle, k, requests)
    if json_out is not None:
        json_out.write_text(json.dumps({"machine": info, "rows": rows}, indent=1))


def check_answers(found: list[list[str]], passing: np.ndarray, ids: list[str], k: int, what: str,
                  share: str) -> None:
    """Exactly k items each, all passing the filter: the endpoint's promise."""
    rows = {item_id: row for row, item_id in enumerate(ids)}
    for answer in found:
        if len(answer) != k or not all(passing[rows[item_id]] for item_id in answer):
            raise RuntimeError(f"{what} with filter {share}: {len(answer)} items, or some fail the filter")


def print_table(rows: list[dict], info: dict, bundle: Any, k: int, requests: int) -> None:
    manifest = bundle.manifest
    print(f"\n## Queries: {len(bundle.item_ids):,} items, index {manifest.index.factory} "
          f"{manifest.index.search_params}, CLIP index {manifest.clip_index.factory}, k={k}\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    print(f"- one worker, one client, {requests} requests per cell (searches: {max(20, requests // 4)}), the "
          "cells taking turns request by request, the first tenth of each discarded as warm-up\n")
    print(f"| endpoint | filter passes | p50 ms | p95 ms | p99 ms | recall@{k} vs exact |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        recall_cell = f"{row[f'recall@{k}']:.3f}" if f"recall@{k}" in row else ""
        print(f"| {row['endpoint']} | {row['filter']} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | "
              f"{row['p99_ms']:.2f} | {recall_cell} |")


if __name__ == "__main__":
    app()
