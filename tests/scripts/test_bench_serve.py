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
