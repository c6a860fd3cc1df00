"""Start-up benchmark (issue 15): time from process start to /health/ready with a long item log,
with and without a snapshot (`service/snapshot.py`).

Builds (once) a bundle with synthetic clustered vectors and realistic-cost encoders
(offline/export/synthetic_bundle.py, default 10,000 items, K=64), then, in a fresh store:

  1. starts `python -m service` on the empty store (the fixed cost: bundle, encoders, warm-up);
  2. writes `--changes` item changes through the store's own write API (`Store.transaction`,
     10,000 changes a transaction): each picks an id from the bundle's items and as many new
     ones; a live one is withdrawn (15%) or replaced by a new vector, a withdrawn or new one is
     put; so the catalog stays about the bundle's size while the log grows;
  3. starts the service with no snapshot on disk: it replays the whole log (and writes a
     snapshot in the background once ready; stopping it writes one at the end of the log);
  4. starts it again: it loads that snapshot and applies nothing;
  5. appends `--tail` more changes and starts it again: the snapshot plus the tail;
  6. in another fresh store, the same for `--interactions` interactions alone (the users'
     fold-in state is in the snapshot too).

Every start is a real `python -m service` process, timed from its launch to the first 200 of
/health/ready; the log entries it applied come from its /metrics. Prints a markdown table.

    .venv/bin/python scripts/bench_startup.py [--changes 1000000] [--items 10000] [--index HNSW32]
        [--postgres postgresql://postgres@127.0.0.1:5432] [--json build/bench-startup.json]

With `--postgres SERVER` the stores are fresh databases made on that server (and dropped after).
"""

import json
import multiprocessing
import uuid
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import typer
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from service.probe import wait_until_ready  # noqa: E402
from service.store import ItemWrite, Store, StoredInteraction, StoredItem, open_store  # noqa: E402

TRANSACTION = 10_000
DELETE_SHARE = 0.15
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _build(bundle_dir: Path, items: int, users: int, index: str, search_params: str) -> None:
    from offline.export.synthetic_bundle import build_scale_bundle

    build_scale_bundle(bundle_dir, n_items=items, n_users=users, index_factory=index, search_params=search_params)


@dataclass
class Catalog:
    """Which ids are live, so every logged change is one the store accepts."""

    ids: list[str]
    in_bundle: np.ndarray
    live: np.ndarray

    @classmethod
    def of(cls, n_bundle: int) -> "Catalog":
        ids = [f"item-{i}" for i in range(n_bundle)] + [f"bench-{i}" for i in range(n_bundle)]
        in_bundle = np.arange(len(ids)) < n_bundle
        return cls(ids, in_bundle, in_bundle.copy())


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_item_changes(store: Store, catalog: Catalog, n: int, dim: int, version: str, seed: int) -> float:
    """Append `n` item changes (module docstring); returns the seconds it took."""
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for first in range(0, n, TRANSACTION):
        size = min(TRANSACTION, n - first)
        picks = rng.integers(0, len(catalog.ids), size)
        withdraw = rng.random(size) < DELETE_SHARE
        vectors = unit_vectors(rng, size, dim)
        now = datetime.now(UTC)
        with store.transaction() as tx:
            for pick, out, vector in zip(picks.tolist(), withdraw.tolist(), vectors, strict=True):
                item_id, in_bundle = catalog.ids[pick], bool(catalog.in_bundle[pick])
                if catalog.live[pick] and out:
                    tx.delete_item(item_id, in_bundle)
                    catalog.live[pick] = False
                    continue
                item = StoredItem(item_id, {"title": f"bench item {pick}"}, vector, version, now, b"\x89PNG")
                tx.put_item(ItemWrite(item, in_bundle, replace=True))
                catalog.live[pick] = True
        print(f"  {first + size:,} item changes written", end="\r", flush=True)
    print()
    return time.perf_counter() - started


def write_interactions(store: Store, n: int, n_items: int, n_users: int, dim: int, version: str,
                       seed: int) -> float:
    """Append `n` interactions of bundle users and as many new ones with bundle items."""
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for first in range(0, n, TRANSACTION):
        size = min(TRANSACTION, n - first)
        users = rng.integers(0, 2 * n_users, size)
        items = rng.integers(0, n_items, size)
        vectors = unit_vectors(rng, size, dim)
        store.add_interactions([StoredInteraction(f"user-{u}", f"item-{i}", v, version)
                                for u, i, v in zip(users.tolist(), items.tolist(), vectors, strict=True)])
    return time.perf_counter() - started


@dataclass
class Start:
    seconds: float
    applied: dict[str, int]
    stop_seconds: float
    log: str


def start_once(bundle: Path, data_dir: Path, port: int, store_url: str | None, *flags: str) -> Start:
    """Launch `python -m service`, time it to /health/ready, read what it applied, stop it (SIGTERM)."""
    log_path = data_dir.parent / f"{data_dir.name}-{int(time.time() * 1000)}.log"
    env = {**os.environ, **({"CLIPER_STORE_URL": store_url} if store_url else {})}
    command = [sys.executable, "-m", "service", "--bundle", str(bundle), "--data-dir", str(data_dir),
               "--port", str(port), "--log-level", "info", *flags]
    with log_path.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", process, timeout_s=3600, poll_s=0.05,
                         output=lambda: log_path.read_text()[-3000:])
        seconds = time.perf_counter() - started
        families = text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        applied = {sample.labels["log"]: int(sample.value) for family in families
                   if family.name == "cliper_log_entries_applied" for sample in family.samples
                   if sample.name.endswith("_total")}
    finally:
        stopping = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=600)
    return Start(seconds, applied, time.perf_counter() - stopping, log_path.read_text())


def snapshot_size(data_dir: Path) -> int:
    """Bytes of the newest snapshot in the data dir's snapshot folder."""
    folders = [path for path in (data_dir / "snapshots").iterdir() if path.is_dir() and not path.name.startswith(".")]
    newest = max(folders, key=lambda path: json.loads((path / "manifest.json").read_text())["created_at"])
    return sum(file.stat().st_size for file in newest.iterdir())


def fresh_store(data_dir: Path, postgres: str | None) -> tuple[Store, str | None]:
    """An empty store: SQLite in a wiped data dir, or a new database on the `postgres` server; and its URL."""
    shutil.rmtree(data_dir, ignore_errors=True)
    url = None
    if postgres is not None:
        import psycopg

        url = f"{postgres.rstrip('/')}/cliper_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{postgres.rstrip('/')}/postgres", autocommit=True) as db:
            db.execute(f"CREATE DATABASE {url.rsplit('/', 1)[1]}")
    return open_store(url, data_dir), url


def drop_store(store: Store, url: str | None, postgres: str | None) -> None:
    store.close()
    if url is not None and postgres is not None:
        import psycopg

        with psycopg.connect(f"{postgres.rstrip('/')}/postgres", autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


@app.command()
def main(
    out_dir: Path = typer.Option(ROOT / "build" / "bench-startup", help="bundle and service data go here"),
    items: int = typer.Option(10_000, help="items in the bundle"),
    users: int = typer.Option(1_000, help="users in the bundle"),
    changes: int = typer.Option(1_000_000, help="item changes logged before the timed starts"),
    tail: int = typer.Option(10_000, help="item changes appended after the snapshot"),
    interactions: int = typer.Option(100_000, help="interactions logged in the interactions-only store (0: skip)"),
    index: str = typer.Option("HNSW32", help="FAISS index factory of the bundle"),
    search_params: str = typer.Option("efSearch=128", help="FAISS search parameters (empty for none)"),
    postgres: str | None = typer.Option(None, help="a PostgreSQL server to make the stores on (default: SQLite)"),
    port: int = typer.Option(8766),
    rebuild: bool = typer.Option(False, help="rebuild the bundle even if one exists"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the numbers here"),
) -> None:
    from cliper.bundle import read_manifest

    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = out_dir / f"bundle-{items}-{index.replace(',', '_')}-{search_params.replace('=', '')}"
    if rebuild or not (bundle / "manifest.json").is_file():
        print(f"building a bundle of {items} items in {bundle}", flush=True)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(_build, bundle, items, users, index, search_params).result()
    manifest = read_manifest(bundle)
    version, dim = manifest.bundle_version, manifest.dims.item
    rows: list[dict] = []

    def timed(label: str, snapshot: str, data_dir: Path, store_url: str | None) -> Start:
        start = start_once(bundle, data_dir, port, store_url)
        rows.append({"log": label, "snapshot": snapshot, "applied": start.applied, "seconds": start.seconds,
                     "stop_seconds": start.stop_seconds})
        print(f"  {label}, {snapshot}: ready in {start.seconds:.1f}s, applied {start.applied}, "
              f"stopped in {start.stop_seconds:.1f}s", flush=True)
        return start

    data_dir = out_dir / "data-items"
    store, url = fresh_store(data_dir, postgres)
    timed("empty store", "none", data_dir, url)
    catalog = Catalog.of(items)
    print(f"writing {changes:,} item changes", flush=True)
    write_s = write_item_changes(store, catalog, changes, dim, version, seed=1)
    print(f"  {changes / write_s:,.0f} changes/s", flush=True)
    timed(f"{changes:,} item changes", "none (whole log)", data_dir, url)
    size = snapshot_size(data_dir)
    timed(f"{changes:,} item changes", "at the end of the log", data_dir, url)
    write_item_changes(store, catalog, tail, dim, version, seed=2)
    timed(f"{changes + tail:,} item changes", f"{tail:,} changes before the end", data_dir, url)
    drop_store(store, url, postgres)

    if interactions:
        data_dir = out_dir / "data-interactions"
        store, url = fresh_store(data_dir, postgres)
        print(f"writing {interactions:,} interactions", flush=True)
        write_interactions(store, interactions, items, users, dim, version, seed=3)
        timed(f"{interactions:,} interactions", "none (whole log)", data_dir, url)
        timed(f"{interactions:,} interactions", "at the end of the log", data_dir, url)
        drop_store(store, url, postgres)

    live = int(catalog.live.sum())
    lines = [
        f"## Start-up: {items:,} bundle items, K={dim}, index {manifest.index.factory} {manifest.index.search_params}, "
        f"{'PostgreSQL' if postgres else 'SQLite'} store",
        "",
        f"- {os.cpu_count()} CPUs, load average at end {', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        f"- item log: {changes:,} changes written at {changes / write_s:,.0f}/s through `Store.transaction` "
        f"({TRANSACTION:,} a transaction); {live:,} items live at the end; newest snapshot {size / 2**20:.1f} MiB",
        "- start-up: `python -m service` launched to the first 200 of /health/ready",
        "",
        "| store's log | snapshot | entries applied at start-up | start-up s | stop s |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {r['log']} | {r['snapshot']} | {sum(r['applied'].values()):,} | {r['seconds']:.1f} | "
          f"{r['stop_seconds']:.1f} |" for r in rows),
    ]
    print("\n".join(lines))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"rows": rows, "changes_per_s": changes / write_s, "snapshot_bytes": size},
                                       indent=1))


if __name__ == "__main__":
    app()
