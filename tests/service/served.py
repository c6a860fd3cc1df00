"""`python -m service` in a subprocess on a free port: the real uvicorn server, for tests that
need real sockets (timeouts, connection limits, chunked bodies) or an outside client."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from service_testing import free_port

from service.probe import wait_until_ready

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    base: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def open_fds(self) -> int:
        """Open file descriptors of the server process (Linux)."""
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))


@contextmanager
def served(bundle: Path, data_dir: Path, *flags: str, env: dict[str, str] | None = None,
           port: int | None = None) -> Iterator[Served]:
    """The service on 127.0.0.1:`port` (default: a free one), ready; `flags` are `python -m service` flags."""
    port = port or free_port()
    log = data_dir.parent / f"{data_dir.name}-server.log"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:  # a file, not a pipe: a full pipe would block the server's logging
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--bundle", str(bundle), "--data-dir", str(data_dir),
             "--port", str(port), "--log-level", "warning", *flags],
            cwd=ROOT, env={**os.environ, **(env or {})}, stdout=output, stderr=subprocess.STDOUT,
        )
    server = Served(f"http://127.0.0.1:{port}", port, process, log)
    try:
        wait_until_ready(server.base, process, output=lambda: log.read_text(errors="replace"))
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
