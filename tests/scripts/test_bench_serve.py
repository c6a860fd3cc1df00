"""The serving benchmark still runs end to end (tiny sizes; its numbers are not checked here)."""

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_bench_serve_prints_every_table(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_serve.py"), "--items", "3000", "--users", "3000",
         "--seconds", "1", "--workers", "2", "--ingest", "9", "--batch", "4", "--out-dir", str(tmp_path),
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for row in ("| concurrency 32 | miss |", "| raw FAISS search + Redis GET", "POST /items, micro-batching"):
        assert row in result.stdout


def test_miss_cells_drop_the_service_cache_keys_of_their_users() -> None:
    """The miss cells must find the service's own cache keys, or they measure hits."""
    import importlib.util

    import redis

    from service.cache import cache_key

    spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "scripts" / "bench_serve.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    version = "bench-test-version"
    keys = {user: cache_key(version, "store-1", f"user-{user}", 0) for user in (3, 300, 301)}
    for key in keys.values():
        client.set(key, b"vector")
    try:
        bench.forget_cached_users("redis://127.0.0.1:6379/0", version, first_user=300)
        assert client.exists(keys[3]) and not client.exists(keys[300]) and not client.exists(keys[301])
    finally:
        client.delete(*keys.values())
