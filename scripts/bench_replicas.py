"""Replicas benchmark (issue 15): replicas of `python -m service` over one PostgreSQL, on this machine.

Measures
  * replication lag: from the 201 of a POST /items on replica A to the item being in replica B's
    index (GET /items/{id} on B answers 200 only for an item in its index), B polled every
    `--poll-ms` by a separate process, both clocks CLOCK_MONOTONIC; a lag below zero (B had
    it before the client read A's 201) counts as 0;
  * recommendations throughput (cache hits, wrk) with 1 replica, and with 2 replicas each driven
    by its own wrk at half the connections (the sum), all on this machine's cores.
Prints a markdown table. Reuses scripts/bench_serve.py's helpers (wrk, the service process).

    .venv/bin/python scripts/bench_replicas.py [--items 20000] [--ingests 150] [--seconds 8]
"""

import multiprocessing
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import numpy as np
import psycopg
import typer

import bench_serve
from bench_serve import ROOT, forget_cached_users, item_bodies, machine, serve, wrk

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new empty database on `server` (a postgresql:// URL without a database); its URL."""
    name = f"cliper_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def poll_until_present(base: str, item_ids: list[str], poll_s: float, results: Connection) -> None:
    """In its own process: for each id in turn, GET it on `base` until 200; send the times seen."""
    seen = []
    with httpx.Client(base_url=base, timeout=10) as client:
        results.send("ready")
        for item_id in item_ids:
            while client.get(f"/items/{item_id}").status_code != 200:
                time.sleep(poll_s)
            seen.append(time.monotonic())
    results.send(seen)


def replication_lag(writer: str, reader: str, bodies: list[dict], poll_s: float) -> list[float]:
    """Seconds from each 201 on `writer` to the item being in `reader`'s index."""
    receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
    ids = [body["item_id"] for body in bodies]
    poller = multiprocessing.get_context("spawn").Process(target=poll_until_present,
                                                          args=(reader, ids, poll_s, send))
    poller.start()
    assert receive.recv() == "ready"
    acknowledged = []
    with httpx.Client(base_url=writer, timeout=60) as client:
        for body in bodies:
            response = client.post("/items", json=body)
            acknowledged.append(time.monotonic())
            if response.status_code != 201:
                raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
            time.sleep(0.02)  # one item at a time: the poller is waiting for this one
    seen = receive.recv()
    poller.join()
    return [max(0.0, b - a) for a, b in zip(acknowledged, seen, strict=True)]


def throughput(bases: list[str], connections: int, seconds: int, users: int) -> float:
    """Recommendations req/s (cache hits) with `connections` spread over the replicas, one wrk each."""
    share = max(connections // len(bases), 1)
    with ThreadPoolExecutor(len(bases)) as pool:  # warm each replica's cache of the users, then measure
        list(pool.map(lambda base: wrk(base, share, max(seconds // 2, 1), 0, users), bases))
        cells = list(pool.map(lambda base: wrk(base, share, seconds, 0, users), bases))
    if min(cell["from_cache"] for cell in cells) < 0.9:
        raise RuntimeError(f"the cache was not warm: {[cell['from_cache'] for cell in cells]}")
    return sum(cell["req_per_s"] for cell in cells)


@app.command()
def main(
    out_dir: Path = typer.Option(ROOT / "build" / "bench-replicas", help="bundle and service data go here"),
    items: int = typer.Option(20_000, help="items in the bundle"),
    users: int = typer.Option(2_000, help="users in the bundle"),
    ingests: int = typer.Option(150, help="items ingested on A for the lag"),
    poll_ms: float = typer.Option(2.0, help="how often the other replica is polled"),
    seconds: int = typer.Option(8, min=1, help="seconds of each throughput cell"),
    connections: int = typer.Option(16, help="wrk connections in all"),
    hit_users: int = typer.Option(256, help="users the throughput cells cycle over (cached)"),
    postgres: str = typer.Option("postgresql://postgres@127.0.0.1:5432", help="PostgreSQL server, no database"),
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0"),
    port: int = typer.Option(8775, help="replica i listens on port + i"),
) -> None:
    from cliper.bundle import read_manifest

    out_dir.mkdir(parents=True, exist_ok=True)
    bundle_dir = out_dir / f"bundle-{items}-{users}"
    if not (bundle_dir / "manifest.json").is_file():
        print(f"building a bundle of {items} items and {users} users in {bundle_dir}", flush=True)
        with multiprocessing.get_context("spawn").Pool(1) as pool:  # torch's OpenMP stays out of this process
            pool.apply(bench_serve._build, (bundle_dir, items, users, "HNSW32", "efSearch=128"))
    manifest = read_manifest(bundle_dir)
    info = machine()
    bodies = item_bodies(ingests + 5, manifest.views.columns, seed=int(time.time()))
    with fresh_database(postgres) as store_url, ExitStack() as stack:
        flags = ("--store-url", store_url, "--redis-url", redis_url)
        bases = [stack.enter_context(serve(bundle_dir, out_dir, port + i, *flags)) for i in range(2)]
        print("replication lag", flush=True)
        replication_lag(bases[0], bases[1], bodies[:5], poll_ms / 1000)  # warm-up
        lags = np.array(replication_lag(bases[0], bases[1], bodies[5:], poll_ms / 1000)) * 1000
        print(f"  p50 {np.percentile(lags, 50):.2f} ms, p99 {np.percentile(lags, 99):.2f} ms", flush=True)
        print("recommendations throughput", flush=True)
        forget_cached_users(redis_url, manifest.bundle_version)
        one = throughput(bases[:1], connections, seconds, hit_users)
        print(f"  1 replica: {one:.0f} req/s", flush=True)
        two = throughput(bases, connections, seconds, hit_users)
        print(f"  2 replicas: {two:.0f} req/s", flush=True)
    info["load average at end"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"## Replicas benchmark: {items:,} items, {users:,} users, index {manifest.index.factory} "
        f"{manifest.index.search_params}, one PostgreSQL, one Redis",
        "",
        *(f"- {key}: {value}" for key, value in info.items()),
        "- replicas: `python -m service` (1 worker each) with `CLIPER_STORE_URL` on one database, all on this "
        "machine with the load generators and PostgreSQL: the cores bound the throughput, so 2 replicas "
        "measure the cost of sharing them, not of scaling out to a second host",
        "",
        "| replication lag: 201 on replica A to the item in replica B's index | p50 ms | p99 ms | max ms | items |",
        "| --- | --- | --- | --- | --- |",
        f"| B polled every {poll_ms:g} ms by another process (GET /items/{{id}}) | {np.percentile(lags, 50):.2f} | "
        f"{np.percentile(lags, 99):.2f} | {lags.max():.2f} | {len(lags)} |",
        "",
        f"| recommendations (k=50, cache hits, wrk, {connections} connections in all, {seconds} s) | req/s |",
        "| --- | --- |",
        f"| 1 replica | {one:.0f} |",
        f"| 2 replicas (one wrk each, {connections // 2} connections) | {two:.0f} ({two / one:.2f}x) |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    app()
