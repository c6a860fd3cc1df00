"""Serving at scale (issue 17): the service at 10^5 and 10^6 items in one run, against its raw parts.

Builds (once each, in build/bench-serve/) the benchmark's synthetic bundles
(offline/export/synthetic_bundle.py: clustered 64-d vectors, realistic-cost encoders, HNSW32 item
and CLIP indexes; HNSW at 10^6 x 64 takes ~12 minutes per index on 2 cores, logged as it goes),
then measures on this machine, for each size:

  * start-up: seconds until `python -m service --workers 1` answers /health/ready (with the
    bundle's checksums verified, the default, and without), and until every worker of
    `--workers N` listens;
  * memory per worker of `--workers N` after the load below (/proc/<pid>/smaps_rollup): RSS,
    PSS (shared pages split between the processes that map them) and USS (pages no other process
    maps: what one more worker adds);
  * recommendations p50/p95/p99 and req/s at concurrency 1, 8, 32 (wrk, one keep-alive
    connection per client; cache hits and misses), the two sizes' services up side by side and
    their cells taking turns, so that other load on the machine hits both alike, `--rounds` times
    (the medians are reported);
  * CPU time per recommendation (the service's processes and Redis, per request) against the
    raw parts: one FAISS search for k=50 + seen of the bundle's memory-mapped index and one Redis
    GET of the user's vector, in-process, for the same users;
  * recall@50 of the recommendations (over HTTP) against an exact search of the bundle's vectors
    (the users' seen items left out of both);
  * ingestion while serving: POST /items (micro-batched) while wrk asks for recommendations.

With `--profile`, one more concurrency-32 cell of the largest size runs under py-spy (every
worker), and the functions with the most samples are printed. Prints a markdown table and the
targets of issue 17 (the largest size's p99 is held against the next smaller size's); `--json`
also writes the numbers.

    .venv/bin/python scripts/bench_scale_serve.py [--items 100000,1000000] [--users 50000,10000000]
"""

import asyncio
import json
import logging
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import typer
from bench_serve import (CONCURRENCY, HIT_USERS, ROOT, bench_ingest, forget_cached_users, item_bodies, machine,
                         percentiles, service_process, wrk)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
RECALL_K = 50
TICKS = os.sysconf("SC_CLK_TCK")


def build(bundle_dir: Path, items: int, users: int, index: str, search_params: str) -> None:
    """The bundle, in this (spawned) process: torch's OpenMP in the parent would slow FAISS down."""
    from offline.export.synthetic_bundle import build_scale_bundle

    logging.basicConfig(level=logging.INFO, format="  %(asctime)s %(name)s: %(message)s")
    build_scale_bundle(bundle_dir, n_items=items, n_users=users, index_factory=index, search_params=search_params)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def workers_of(process: subprocess.Popen, workers: int) -> list[int]:
    """The worker processes of a `python -m service` process (itself with one worker)."""
    if workers == 1:
        return [process.pid]
    return [pid for pid in children(process.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def listening(port: int) -> set[int]:
    """The processes listening on `port` (ss)."""
    output = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", output)}


def wait_for_workers(process: subprocess.Popen, port: int, workers: int, timeout_s: float = 600) -> list[int]:
    """Wait until `workers` worker processes listen on `port` (each starts serving once its start-up
    is done); their pids."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = [pid for pid in workers_of(process, workers) if pid in listening(port)]
        if len(pids) == workers:
            return pids
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{len(pids)} of {workers} workers listen on port {port}")
        time.sleep(0.1)


def memory(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (private pages) of a process, and its anonymous memory, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) / 1024
    return {"rss_mb": fields["Rss"], "pss_mb": fields["Pss"], "anon_mb": fields["Anonymous"],
            "uss_mb": fields["Private_Clean"] + fields["Private_Dirty"]}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of `pids` so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICKS


def redis_pid(redis_url: str) -> int:
    import redis

    return int(redis.Redis.from_url(redis_url).info("server")["process_id"])


def raw_parts(bundle_dir: Path, redis_url: str, redis: int, n: int = 4000) -> dict[str, float]:
    """What a cache hit needs at least, in this process on one thread: a Redis GET of the user's
    vector and one search of the bundle's (memory-mapped) index for k=50 + the user's seen items,
    over the hit cells' users. CPU seconds per query (this process and Redis) and latency."""
    import faiss
    import redis as redis_client

    from cliper.bundle import read_bundle

    bundle = read_bundle(bundle_dir, verify=False)
    faiss.omp_set_num_threads(1)
    client = redis_client.Redis.from_url(redis_url)
    users = np.arange(n) % HIT_USERS
    for user in range(HIT_USERS):
        client.set(f"bench:raw:{user}", np.asarray(bundle.user_vectors[user]).tobytes())
    fetch = [RECALL_K + len(bundle.seen.items_of(user)) for user in range(HIT_USERS)]
    for user in users[:HIT_USERS]:  # warm-up: the index pages these users reach
        bundle.index.search(np.frombuffer(client.get(f"bench:raw:{user}"), dtype=np.float32)[None, :], fetch[user])
    latencies = []
    cpu = time.process_time(), cpu_seconds([redis])
    for user in users:
        start = time.perf_counter()
        vector = np.frombuffer(client.get(f"bench:raw:{user}"), dtype=np.float32)
        bundle.index.search(vector[None, :], fetch[user])
        latencies.append(time.perf_counter() - start)
    used = time.process_time() - cpu[0] + cpu_seconds([redis]) - cpu[1]
    client.delete(*(f"bench:raw:{user}" for user in range(HIT_USERS)))
    return {"cpu_ms": used / n * 1000, **percentiles(latencies)}


def recall(base: str, bundle_dir: Path, users: int, n: int = 200) -> float:
    """Mean recall@50 of the service's recommendations against an exact search of the bundle's
    vectors (the user's seen items left out of both), over `n` users past the hit users."""
    from cliper.bundle import read_bundle

    bundle = read_bundle(bundle_dir, verify=False)
    rows = np.random.default_rng(3).choice(np.arange(HIT_USERS, users), n, replace=False)
    hits = 0
    with httpx.Client(base_url=base, timeout=60) as client:
        for start in range(0, n, 25):
            block = rows[start : start + 25]
            scores = np.asarray(bundle.user_vectors[block]) @ np.asarray(bundle.item_vectors).T
            for user, row_scores in zip(block, scores, strict=True):
                row_scores[bundle.seen.items_of(user)] = -np.inf
                exact = {bundle.item_ids[i] for i in np.argpartition(-row_scores, RECALL_K)[:RECALL_K]}
                answer = client.get(f"/users/{bundle.user_ids[user]}/recommendations", params={"k": RECALL_K}).json()
                hits += len(exact & {item["item_id"] for item in answer["items"]})
    return hits / (n * RECALL_K)


def measured_cell(base: str, pids: list[int], concurrency: int, seconds: int, users: tuple[int, int]) -> dict[str, Any]:
    """One wrk cell, with the CPU seconds the service's processes (and Redis) spent per request."""
    before = cpu_seconds(pids)
    row = wrk(base, concurrency, seconds, *users)
    requests = row["req_per_s"] * seconds
    row["cpu_ms"] = (cpu_seconds(pids) - before) * 1000 / max(requests, 1)
    row["wall_cpu_ms"] = (os.cpu_count() or 1) * 1000 / row["req_per_s"]  # cores x seconds / requests
    return row


def ingest_while_serving(base: str, pids: list[int], bodies: list[dict], batch: int, seconds: int) -> dict[str, Any]:
    """POST /items (concurrency `batch`) while wrk runs a concurrency-8 cell of cache hits."""
    result: dict[str, Any] = {}

    def serve_load() -> None:
        result.update(measured_cell(base, pids, 8, seconds, (0, HIT_USERS)))

    loader = threading.Thread(target=serve_load)
    loader.start()
    started = time.perf_counter()
    rate = bench_ingest(base, bodies, batch)
    result["ingest_s"] = time.perf_counter() - started
    loader.join()
    return {**result, "items_per_s": rate}


def profile(pids: list[int], base: str, seconds: int, out: Path) -> list[tuple[str, float]]:
    """A concurrency-32 cell of cache hits under py-spy (every worker, without idle samples); the
    functions with the most samples, by share of all samples: own samples first, then inclusive
    ones (below 60%: the frames every request passes through left out)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))  # the venv's
    records = [subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(seconds + 2), "--rate",
                                 "200", "--format", "raw", "--output", str(out / f"py-spy-{pid}.txt"), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for pid in pids]
    time.sleep(1)
    wrk(base, 32, seconds, 0, HIT_USERS)
    for record in records:
        record.wait(timeout=120)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for path in (out / f"py-spy-{pid}.txt" for pid in pids):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [re.sub(r" \((?:.*/)?(.*?):\d+\)$", r" (\1)", frame).strip() for frame in stack.split(";") if frame]
            if frames:
                own[frames[-1]] += int(count)
                for frame in set(frames):
                    inclusive[frame] += int(count)
    total = sum(own.values()) or 1
    return ([(f"own {name}", count / total) for name, count in own.most_common(15)]
            + [(f"incl. {name}", count / total) for name, count in inclusive.most_common()
               if count / total < 0.6][:30])


@contextmanager
def services(bundles: dict[int, Path], out: Path, port: int, workers: int, redis_url: str) -> Iterator[dict]:
    """Every size's service with `workers` workers, side by side on ports port, port + 1, ..."""
    with ExitStack() as stack:
        up = {}
        for offset, (items, bundle_dir) in enumerate(bundles.items()):
            base, process, ready_s = stack.enter_context(service_process(
                bundle_dir, out, port + offset, "--redis-url", redis_url, "--workers", str(workers)))
            started = time.perf_counter()
            pids = wait_for_workers(process, port + offset, workers)
            up[items] = {"base": base, "process": process, "workers": pids,
                         "all_ready_s": ready_s + time.perf_counter() - started}
        yield up


@app.command()
def main(
    out_dir: Path = typer.Option(ROOT / "build" / "bench-serve", help="bundles and service data go here"),
    items: str = typer.Option("100000,1000000", help="catalog sizes, comma-separated"),
    users: str = typer.Option("50000,10000000", help="users of each size's bundle, comma-separated"),
    seconds: int = typer.Option(8, min=1, help="seconds of each wrk cell"),
    rounds: int = typer.Option(3, min=1, help="rounds of the recommendation cells (medians reported)"),
    workers: int = typer.Option(2, help="service worker processes"),
    ingest: int = typer.Option(48, help="items posted while serving (after one warm-up batch)"),
    batch: int = typer.Option(16, help="micro-batch size and ingestion concurrency"),
    index: str = typer.Option(
        "HNSW32", help="FAISS index factory of the bundles' item and CLIP index, or one per size separated by ';'"),
    search_params: str = typer.Option(
        "efSearch=128", help="FAISS search parameters of every size, or one per size separated by ';'"),
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0"),
    port: int = typer.Option(8765),
    profile_run: bool = typer.Option(False, "--profile", help="one more c=32 cell of the largest size under py-spy"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the numbers here"),
) -> None:
    from cliper.bundle import read_manifest

    sizes = [int(value) for value in items.split(",")]
    user_counts = dict(zip(sizes, (int(value) for value in users.split(",")), strict=True))
    size_index, size_params = per_size(index, sizes, "--index"), per_size(search_params, sizes, "--search-params")
    out_dir.mkdir(parents=True, exist_ok=True)
    bundles = {size: out_dir / f"bundle-{size}-{user_counts[size]}u-{size_index[size].replace(',', '_')}-"
                                 f"{size_params[size].replace('=', '').replace(',', '_')}" for size in sizes}
    for size, bundle_dir in bundles.items():
        if not (bundle_dir / "manifest.json").is_file():
            print(f"building a bundle of {size:,} items and {user_counts[size]:,} users in {bundle_dir}", flush=True)
            started = time.perf_counter()
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                pool.submit(build, bundle_dir, size, user_counts[size], size_index[size], size_params[size]).result()
            print(f"  built in {time.perf_counter() - started:.0f}s", flush=True)
    manifests = {size: read_manifest(path) for size, path in bundles.items()}
    info = machine()
    redis = redis_pid(redis_url)
    results: dict[int, dict[str, Any]] = {size: {"users": user_counts[size]} for size in sizes}

    print("raw parts (in-process, one thread)", flush=True)
    for size, bundle_dir in bundles.items():
        results[size]["raw"] = raw_parts(bundle_dir, redis_url, redis)
        print(f"  {size:>9,} items: Redis GET + search {results[size]['raw']['p50_ms']:.3f} ms p50, "
              f"{results[size]['raw']['cpu_ms']:.3f} ms CPU", flush=True)

    print("start-up, one worker", flush=True)
    for size, bundle_dir in bundles.items():
        forget_cached_users(redis_url, manifests[size].bundle_version)
        with service_process(bundle_dir, out_dir, port, "--redis-url", redis_url, "--verify-bundle", "false") as (
                _, _, ready_s):
            results[size]["startup_unverified_s"] = ready_s
        with service_process(bundle_dir, out_dir, port, "--redis-url", redis_url) as (base, process, ready_s):
            wrk(base, 8, max(seconds // 2, 1), 0, HIT_USERS)
            results[size]["startup_1_worker_s"] = ready_s
            results[size]["memory_1_worker"] = memory(process.pid)
    print(f"{workers} workers per size, side by side", flush=True)
    bodies = item_bodies(ingest + batch, manifests[sizes[0]].views.columns, seed=17)
    with services(bundles, out_dir, port, workers, redis_url) as up:
        for size in sizes:
            results[size]["startup_workers_s"] = up[size]["all_ready_s"]
            wrk(up[size]["base"], 8, max(seconds // 2, 1), 0, HIT_USERS)  # warm-up: caches the hit users
        pids = {size: [up[size]["process"].pid, *up[size]["workers"], redis] for size in sizes}
        cells: dict[int, list[dict]] = {size: [] for size in sizes}
        for round_ in range(rounds):
            for concurrency in CONCURRENCY:
                for mode in ("hit", "miss"):
                    for size in sizes:
                        if mode == "miss":
                            forget_cached_users(redis_url, manifests[size].bundle_version, first_user=HIT_USERS)
                        span = (0, HIT_USERS) if mode == "hit" else (HIT_USERS, user_counts[size] - HIT_USERS)
                        row = {"cache": mode, "round": round_,
                               **measured_cell(up[size]["base"], pids[size], concurrency, seconds, span)}
                        cells[size].append(row)
                        print(f"  {size:>9,} items c={concurrency:<2} {mode:4}: {row['p50_ms']:.2f} / "
                              f"{row['p99_ms']:.2f} ms p50/p99, {row['req_per_s']:.0f} req/s, {row['cpu_ms']:.2f} ms "
                              "CPU/request", flush=True)
        for size in sizes:
            results[size]["rounds"] = cells[size]
            results[size]["cells"] = medians(cells[size])
            results[size]["memory"] = [memory(pid) for pid in up[size]["workers"]]
            results[size]["supervisor_memory"] = memory(up[size]["process"].pid)
            results[size]["recall_at_50"] = recall(up[size]["base"], bundles[size], user_counts[size])
            print(f"  {size:>9,} items: recall@50 {results[size]['recall_at_50']:.3f}", flush=True)
        for size in sizes:  # each service has a store of its own: the same items go to both
            results[size]["ingest"] = ingest_while_serving(up[size]["base"], pids[size], bodies, batch, seconds)
            print(f"  {size:>9,} items: {results[size]['ingest']['items_per_s']:.1f} items/s ingested while serving "
                  f"{results[size]['ingest']['req_per_s']:.0f} req/s (p99 {results[size]['ingest']['p99_ms']:.1f} ms)",
                  flush=True)
        if profile_run:
            largest = sizes[-1]
            results[largest]["profile"] = profile(up[largest]["workers"], up[largest]["base"], seconds, out_dir)
    info["load average at end"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = table(results, manifests, info, workers, seconds)
    print("\n".join(lines))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"machine": info, "results": {str(k): v for k, v in results.items()}}, indent=2))


def medians(rows: list[dict]) -> list[dict]:
    """Per concurrency and cache mode, the median of each number over the rounds."""
    cells = []
    for key in dict.fromkeys((row["concurrency"], row["cache"]) for row in rows):
        same = [row for row in rows if (row["concurrency"], row["cache"]) == key]
        cells.append({"concurrency": key[0], "cache": key[1], "rounds": len(same),
                      **{name: float(np.median([row[name] for row in same])) for name in same[0]
                         if name not in ("concurrency", "cache", "round")}})
    return cells


def per_size(value: str, sizes: list[int], option: str) -> dict[int, str]:
    """An option's value for each size: one for all, or one per size separated by ';'."""
    values = value.split(";")
    if len(values) not in (1, len(sizes)):
        raise typer.BadParameter(f"give one value, or {len(sizes)} separated by ';' (one per size)", param_hint=option)
    return dict(zip(sizes, values * len(sizes) if len(values) == 1 else values, strict=True))


def p99_reference(sizes: list[int]) -> int:
    """The size whose p99 the largest size's is held against: the next smaller one (issue 17's
    10^6 against 10^5 items, whatever smaller sizes also ran), or itself when it ran alone."""
    return sizes[-2] if len(sizes) > 1 else sizes[-1]


def table(results: dict[int, dict], manifests: dict, info: dict[str, str], workers: int, seconds: int) -> list[str]:
    """The markdown report: per size, then the targets of issue 17."""
    sizes = sorted(results)

    def cell(size: int, concurrency: int, mode: str) -> dict:
        return next(row for row in results[size]["cells"] if row["concurrency"] == concurrency and row["cache"] == mode)

    lines = [f"## Serving at scale: {', '.join(f'{size:,}' for size in sizes)} items, `--workers {workers}`", "",
             *(f"- {key}: {value}" for key, value in info.items()),
             f"- the item and the CLIP index of each size as in the table; wrk, 1 thread, {seconds} s per cell, "
             f"the sizes' cells taking turns, medians of "
             f"{results[sizes[0]]['cells'][0]['rounds']} rounds", "",
             "| | " + " | ".join(f"{size:,} items" for size in sizes) + " |",
             "| --- | " + " | ".join("---" for _ in sizes) + " |"]

    def row(name: str, values: list[str]) -> None:
        lines.append(f"| {name} | " + " | ".join(values) + " |")

    row("users", [f"{results[size]['users']:,}" for size in sizes])
    row("index (item and CLIP), search parameters", [
        f"{manifests[size].index.factory}, {manifests[size].index.search_params or 'default'}" for size in sizes])
    row("start-up, 1 worker: s to ready (checksums not verified)", [
        f"{results[size]['startup_1_worker_s']:.1f} ({results[size]['startup_unverified_s']:.1f})" for size in sizes])
    row(f"start-up, {workers} workers (s until all listen)", [f"{results[size]['startup_workers_s']:.1f}"
                                                            for size in sizes])
    row("memory, 1 worker alone: RSS MiB", [f"{results[size]['memory_1_worker']['rss_mb']:.0f}" for size in sizes])
    for i in range(workers):
        row(f"worker {i + 1} of {workers}: RSS / PSS / USS MiB", [
            "{rss_mb:.0f} / {pss_mb:.0f} / {uss_mb:.0f}".format(**results[size]["memory"][i]) for size in sizes])
    row("supervisor process: RSS / USS MiB", ["{rss_mb:.0f} / {uss_mb:.0f}".format(**results[size]["supervisor_memory"])
                                              for size in sizes])
    row("a worker's USS / a worker's RSS (what one more worker adds)", [
        f"{max(m['uss_mb'] for m in results[size]['memory']) / min(m['rss_mb'] for m in results[size]['memory']):.0%}"
        for size in sizes])
    for concurrency in (1, 8, 32):
        for mode in ("hit", "miss"):
            row(f"recommendations c={concurrency} {mode}: p50 / p99 ms (req/s)", [
                "{p50_ms:.2f} / {p99_ms:.2f} ({req_per_s:.0f})".format(**cell(size, concurrency, mode)) for size in sizes])
    row("CPU ms per recommendation, c=32 hit (service + Redis)", [f"{cell(size, 32, 'hit')['cpu_ms']:.2f}"
                                                                   for size in sizes])
    row("raw Redis GET + FAISS search: CPU ms (p50 ms)", [
        "{cpu_ms:.3f} ({p50_ms:.3f})".format(**results[size]["raw"]) for size in sizes])
    row("recall@50 vs exact: recommendations over HTTP", [f"{results[size]['recall_at_50']:.3f}" for size in sizes])
    row("recall@50 vs exact: the index at export", [
        "exact" if manifests[size].index.recall_at_50 is None else f"{manifests[size].index.recall_at_50:.3f}"
        for size in sizes])
    row("ingestion while serving: items/s; recommendations c=8 hit p50 / p99 ms", [
        "{items_per_s:.1f}; {p50_ms:.2f} / {p99_ms:.2f}".format(**results[size]["ingest"]) for size in sizes])
    large, smaller = sizes[-1], p99_reference(sizes)
    p99 = cell(large, 32, "hit")["p99_ms"] / cell(smaller, 32, "hit")["p99_ms"]
    p99_miss = cell(large, 32, "miss")["p99_ms"] / cell(smaller, 32, "miss")["p99_ms"]
    cpu = cell(large, 32, "hit")["cpu_ms"] / results[large]["raw"]["cpu_ms"]
    added = (max(m["uss_mb"] for m in results[large]["memory"])
             / min(m["rss_mb"] for m in results[large]["memory"]))
    lines += ["", "| target (issue 17) | measured | met |", "| --- | --- | --- |",
              f"| p99 c=32 at {large:,} / at {smaller:,} items <= 1.3 | {p99:.2f} (hits), {p99_miss:.2f} (misses) | "
              f"{'yes' if p99 <= 1.3 else 'no'} |",
              f"| recall@50 vs exact >= 0.95 at {large:,} items | {results[large]['recall_at_50']:.3f} | "
              f"{'yes' if results[large]['recall_at_50'] >= 0.95 else 'no'} |",
              f"| CPU per recommendation <= 2x raw search + GET, {large:,} items | {cpu:.2f}x | "
              f"{'yes' if cpu <= 2 else 'no'} |",
              f"| the second worker adds < 25% of the first's memory, {large:,} items | {added:.0%} | "
              f"{'yes' if added < 0.25 else 'no'} |"]
    if "profile" in results[large]:
        lines += ["", f"py-spy, c=32 cache hits at {large:,} items, share of samples:", "",
                  *(f"- {name}: {share:.1%}" for name, share in results[large]["profile"])]
    return lines


if __name__ == "__main__":
    app()
