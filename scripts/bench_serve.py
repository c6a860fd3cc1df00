"""Serving benchmark (issue 5): the real service under load, against its raw parts, in one run.

Builds (once) a bundle of 100,000 items with synthetic clustered vectors and realistic-cost
encoders (offline/export/synthetic_bundle.py), then measures on this machine:
  * the raw parts in-process: FAISS search + Redis GET per query, the ONNX encoders' items/s;
  * `python -m service --workers N` in a subprocess, driven by wrk (a C load generator, so the
    generator's own CPU use stays small: `apt-get install wrk`): recommendations p50/p95/p99 and
    req/s at concurrency 1, 8, 32 (closed loop, one keep-alive connection per client) with the
    user vector in the cache (hit) and not (miss);
  * POST /items items/s with and without micro-batching (an httpx async client in this process).
Prints a markdown table and the machine; `--json` also writes the numbers.

    .venv/bin/python scripts/bench_serve.py [--items 100000] [--workers 2] [--json build/bench-serve.json]
"""

import asyncio
import base64
import io
import itertools
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import typer
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from service.probe import wait_until_ready  # noqa: E402

CONCURRENCY = (1, 8, 32)
HIT_USERS = 256
WRK_SCRIPT = ROOT / "scripts" / "wrk" / "bench.lua"
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _build(bundle_dir: Path, items: int, users: int, index: str, search_params: str) -> None:
    from offline.export.synthetic_bundle import build_scale_bundle

    build_scale_bundle(bundle_dir, n_items=items, n_users=users, index_factory=index, search_params=search_params)


def forget_cached_users(redis_url: str, bundle_version: str, first_user: int = 0) -> None:
    """Drop this bundle's cached vectors of users `user-N` with N >= `first_user` (left by an earlier
    run or cell), so misses are misses."""
    import redis

    client = redis.Redis.from_url(redis_url)
    # keys are cliper:{bundle}:{store}:user:{user_id}:{generation} (service.cache.cache_key)
    keys = [key for key in client.scan_iter(f"cliper:{bundle_version}:*:user:user-*", count=10_000)
            if int(key.split(b":")[4].removeprefix(b"user-")) >= first_user]
    for start in range(0, len(keys), 10_000):
        client.delete(*keys[start : start + 10_000])


def percentiles(latencies: list[float]) -> dict[str, float]:
    ms = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99))}


def machine() -> dict[str, str]:
    import faiss
    import onnxruntime as ort

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores", "memory": f"{int(memory) / 2**20:.0f} GiB",
        "gpu": f"ONNX Runtime providers {ort.get_available_providers()}, FAISS GPUs {faiss.get_num_gpus()}",
        "software": f"Python {platform.python_version()}, onnxruntime {ort.__version__}, faiss {faiss.__version__}",
        "load average at start (1, 5, 15 min)": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def item_bodies(n: int, fields: list[str], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    bodies = []
    for i in range(n):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((320, 240), Image.Resampling.BILINEAR).save(buffer, format="JPEG")
        text = {name: f"{name} of product {i}: a sturdy ceramic espresso cup" for name in fields}
        bodies.append({"item_id": f"bench-{seed}-{i}", "fields": text,
                       "image_base64": base64.b64encode(buffer.getvalue()).decode()})
    return bodies


def raw_search_and_cache(bundle_dir: Path, redis_url: str, n: int = 500) -> dict[str, float]:
    """One FAISS search (k=50 + seen) + one Redis GET of a user vector, as the service does them."""
    import faiss
    import redis

    from cliper.bundle import read_bundle

    bundle = read_bundle(bundle_dir, verify=False)
    faiss.omp_set_num_threads(1)  # as the service searches (CLIPER_SEARCH_THREADS default)
    client = redis.Redis.from_url(redis_url)
    rng = np.random.default_rng(1)
    latencies = []
    for user in rng.integers(0, len(bundle.user_ids), n):
        vector = bundle.user_vectors[user]
        client.set("bench:raw", vector.tobytes())
        start = time.perf_counter()
        cached = np.frombuffer(client.get("bench:raw"), dtype=np.float32)
        bundle.index.search(cached[None, :], 50 + len(bundle.seen.items_of(user)))
        latencies.append(time.perf_counter() - start)
    client.delete("bench:raw")
    return percentiles(latencies)


def raw_encoders(bundle_dir: Path, bodies: list[dict], batch_sizes: tuple[int, ...]) -> dict[int, float]:
    """items/s of the three ONNX sessions alone (inputs prepared beforehand) per batch size."""
    from cliper.bundle import read_bundle
    from service.encoders import ItemEncoder
    from service.metrics import Metrics

    encoder = ItemEncoder(read_bundle(bundle_dir, verify=False), Metrics())
    prepared = [encoder.prepare(body["fields"], encoder.decode(base64.b64decode(body["image_base64"])))
                for body in bodies]
    throughput = {}
    for size in batch_sizes:
        batches = [prepared[i : i + size] for i in range(0, len(prepared) - size + 1, size)]
        feeds = []
        for batch in batches:
            chunks = [chunk for item in batch for view in item.prompts for chunk in view]
            feeds.append((np.stack([item.pixels for item in batch]), encoder.text_feeds(chunks)))
        n_views = len(encoder.manifest.views.view_names)

        def run(pixels: np.ndarray, tokens: dict) -> None:
            image = encoder.image.run({"pixel_values": pixels})
            text = encoder.text.run(tokens).reshape(len(pixels), n_views, -1)
            encoder.tower.run({"image_features": image, "text_view_features": text})

        run(*feeds[0])
        start = time.perf_counter()
        for pixels, tokens in feeds:
            run(pixels, tokens)
        throughput[size] = len(feeds) * size / (time.perf_counter() - start)
    return throughput


@contextmanager
def service_process(bundle_dir: Path, work: Path, port: int, *extra: str) -> Iterator[tuple[str, subprocess.Popen, float]]:
    """`python -m service` in a subprocess until the block ends; yields its base URL, the process
    and the seconds it took to answer /health/ready."""
    data_dir = Path(tempfile.mkdtemp(prefix="service-data-", dir=work))
    log = (work / f"service-{port}.log").open("w")
    command = [sys.executable, "-m", "service", "--bundle", str(bundle_dir), "--port", str(port),
               "--data-dir", str(data_dir), "--log-level", "warning", *extra]
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        waited = wait_until_ready(base, process, timeout_s=600, poll_s=0.2, output=lambda: f"see {log.name}")
        print(f"  service ready in {waited:.1f}s ({' '.join(extra)})", flush=True)
        yield base, process, waited
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
        shutil.rmtree(data_dir)


@contextmanager
def serve(bundle_dir: Path, work: Path, port: int, *extra: str) -> Iterator[str]:
    """`python -m service` in a subprocess until the block ends; yields its base URL."""
    with service_process(bundle_dir, work, port, *extra) as (base, _, _):
        yield base


async def load(base: str, concurrency: int, n: int,
               send: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]) -> float:
    """Closed loop: `concurrency` clients (one connection each) send `n` requests in all; the wall
    time. The clients are made before the clock starts (each builds an SSL context: ~15 ms)."""
    counter = itertools.count()
    clients = [httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=1), timeout=120)
               for _ in range(concurrency)]

    async def worker(client: httpx.AsyncClient) -> None:
        while (i := next(counter)) < n:
            response = await send(client, i)
            if response.status_code >= 400:
                raise RuntimeError(f"{response.status_code}: {response.text[:300]}")

    start = time.perf_counter()
    try:
        await asyncio.gather(*(worker(client) for client in clients))
        return time.perf_counter() - start
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))


def wrk(base: str, concurrency: int, seconds: int, *users: int) -> dict[str, Any]:
    """One closed-loop wrk run (`users`: first and count of the user range; none: /health/live)."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "-s", str(WRK_SCRIPT), base,
               *(["--", *map(str, users)] if users else [])]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    if result["failed"] or result["socket_errors"]:
        raise RuntimeError(f"wrk saw {result['failed']} error responses and {result['socket_errors']} socket errors")
    return {"concurrency": concurrency, "req_per_s": result["requests"] / result["seconds"],
            "from_cache": result["cached"] / max(result["requests"], 1),
            **{f"p{q}_ms": result[f"p{q}_us"] / 1000 for q in (50, 95, 99)}}


def bench_recommendations(base: str, redis_url: str, bundle_version: str, n_users: int, seconds: int) -> list[dict]:
    """Cache hits cycle over users 0..HIT_USERS-1 (cached by a warm-up run); each miss cell cycles
    over all the other users, their cached vectors dropped before it (a cell with more requests
    than users would wrap into hits: the `from cache` column shows it)."""
    wrk(base, 8, max(seconds // 2, 1), 0, HIT_USERS)  # warm the cache (and the server)
    http = wrk(base, 1, seconds)
    rows = [{**http, "cache": "GET /health/live (HTTP round trip only)", "from_cache": 0.0}]
    for concurrency in CONCURRENCY:
        for mode in ("hit", "miss"):
            if mode == "miss":
                forget_cached_users(redis_url, bundle_version, first_user=HIT_USERS)
            users = (0, HIT_USERS) if mode == "hit" else (HIT_USERS, n_users - HIT_USERS)
            rows.append({"cache": mode, **wrk(base, concurrency, seconds, *users)})
            print(f"  recommendations c={concurrency:<2} {mode:4}: {rows[-1]['p50_ms']:.2f} / "
                  f"{rows[-1]['p99_ms']:.2f} ms p50/p99, {rows[-1]['req_per_s']:.0f} req/s", flush=True)
    return rows


def bench_ingest(base: str, bodies: list[dict], concurrency: int) -> float:
    def post(client: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
        return client.post("/items", json=bodies[i])

    asyncio.run(load(base, concurrency, concurrency, post))  # warm-up items
    wall = asyncio.run(load(base, concurrency, len(bodies) - concurrency, lambda client, i: post(client, i + concurrency)))
    return (len(bodies) - concurrency) / wall


@app.command()
def main(
    out_dir: Path = typer.Option(ROOT / "build" / "bench-serve", help="bundle and service data go here"),
    items: int = typer.Option(100_000, help="items in the bundle"),
    users: int = typer.Option(50_000, help="users in the bundle"),
    seconds: int = typer.Option(8, min=1, help="seconds of each recommendations (concurrency, cache) cell"),
    workers: int = typer.Option(os.cpu_count() or 1, help="service worker processes for the recommendations"),
    ingest: int = typer.Option(64, help="items posted per ingestion run (the first batch is warm-up)"),
    batch: int = typer.Option(16, help="micro-batch size (and ingestion concurrency)"),
    index: str = typer.Option("HNSW32", help="FAISS index factory of the bundle, e.g. Flat for exact search"),
    search_params: str = typer.Option("efSearch=128", help="FAISS search parameters (empty for none)"),
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0"),
    port: int = typer.Option(8765),
    rebuild: bool = typer.Option(False, help="rebuild the bundle even if one exists"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the numbers here"),
) -> None:
    from cliper.bundle import read_manifest

    if shutil.which("wrk") is None:
        raise typer.BadParameter("the load generator wrk is not installed: apt-get install wrk (or make bench-serve)")
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle_dir = out_dir / f"bundle-{items}-{index.replace(',', '_')}-{search_params.replace('=', '')}"
    if rebuild or not (bundle_dir / "manifest.json").is_file():
        print(f"building a bundle of {items} items and {users} users in {bundle_dir}", flush=True)
        # in a separate process: torch's OpenMP in this one would slow FAISS down
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(_build, bundle_dir, items, users, index, search_params).result()
    manifest = read_manifest(bundle_dir)
    forget_cached_users(redis_url, manifest.bundle_version)
    info = machine()
    print("raw parts (in-process)", flush=True)
    raw_path = raw_search_and_cache(bundle_dir, redis_url)
    bodies = item_bodies(ingest + batch * 2, manifest.views.columns)
    raw = raw_encoders(bundle_dir, bodies, (1, batch))
    print(f"  FAISS search + Redis GET p50 {raw_path['p50_ms']:.2f} ms; encoders {raw[1]:.1f} items/s (batch 1), "
          f"{raw[batch]:.1f} items/s (batch {batch})", flush=True)

    print("recommendations", flush=True)
    with serve(bundle_dir, out_dir, port, "--redis-url", redis_url, "--workers", str(workers)) as base:
        recs = bench_recommendations(base, redis_url, manifest.bundle_version, users, seconds)
    print("ingestion", flush=True)
    ingest_rate = {}
    for size, wait in ((batch, 10), (1, 0)):
        with serve(bundle_dir, out_dir, port, "--max-batch-size", str(size), "--max-batch-wait-ms", str(wait)) as base:
            ingest_rate[size] = bench_ingest(base, bodies[: ingest + batch], batch)
        print(f"  POST /items, max batch {size}: {ingest_rate[size]:.1f} items/s", flush=True)

    hit1 = next(r for r in recs if r["concurrency"] == 1 and r["cache"] == "hit")
    http = recs.pop(0)
    info["load average at end"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"## Serving benchmark: {items:,} items, {users:,} users, K={manifest.dims.item}, index "
        f"{manifest.index.factory} {manifest.index.search_params} (recall@50 vs exact: "
        f"{'exact' if manifest.index.recall_at_50 is None else f'{manifest.index.recall_at_50:.3f}'})",
        "",
        *(f"- {key}: {value}" for key, value in info.items()),
        f"- encoders: ResNet-18 at {manifest.preprocess.image_size}px + MiniLM-L6-sized BERT at "
        f"{manifest.tokenizer.context_length} tokens x {len(manifest.views.view_names)} views (random weights)",
        f"- service: `python -m service --workers {workers}`; recommendations load generator: wrk (1 thread, "
        f"{seconds:g} s per cell), ingestion: httpx async; both in the same run on the same machine",
        "",
        "| recommendations | cache | p50 ms | p95 ms | p99 ms | req/s | from cache |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(f"| concurrency {r['concurrency']} | {r['cache']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
          f"{r['p99_ms']:.2f} | {r['req_per_s']:.0f} | {r['from_cache']:.0%} |" for r in recs),
        "",
        "| raw parts vs service | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- |",
        *(f"| {name} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['p99_ms']:.2f} |"
          for name, row in (("raw FAISS search + Redis GET (in-process)", raw_path),
                            ("HTTP round trip: GET /health/live, concurrency 1", http),
                            ("service: recommendations, concurrency 1, cache hit", hit1))),
        "",
        "| ingestion | items/s | raw encoders items/s | ratio |",
        "| --- | --- | --- | --- |",
        f"| POST /items, micro-batching (max {batch}, {batch} concurrent clients) | {ingest_rate[batch]:.1f} | "
        f"{raw[batch]:.1f} (batch {batch}) | {ingest_rate[batch] / raw[batch]:.0%} |",
        f"| POST /items, no batching (max 1, {batch} concurrent clients) | {ingest_rate[1]:.1f} | "
        f"{raw[1]:.1f} (batch 1) | {ingest_rate[1] / raw[1]:.0%} |",
    ]
    print("\n".join(lines))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"machine": info, "recommendations": recs, "raw_search_cache": raw_path,
                                        "http_round_trip": http, "raw_encoders": raw, "ingest": ingest_rate},
                                       indent=2))


if __name__ == "__main__":
    app()
