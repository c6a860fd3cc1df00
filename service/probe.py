"""Waiting for a `python -m service` process started elsewhere (tests, benchmarks) to be ready."""

import subprocess
import time
from collections.abc import Callable

import httpx


class NotReady(RuntimeError):
    """The process exited, or did not answer `/health/ready` with 200 in time."""


def wait_until_ready(
    base: str,
    process: subprocess.Popen,
    timeout_s: float = 60.0,
    poll_s: float = 0.1,
    output: Callable[[], str] = lambda: "",
) -> float:
    """Poll `base`/health/ready until it answers 200; returns the seconds waited. `output`
    gives what the process printed, for the error when it exits or times out."""
    started = time.perf_counter()
    while True:
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise NotReady(f"the service exited with status {process.returncode}: {output()}")
        if time.perf_counter() - started > timeout_s:
            raise NotReady(f"the service did not become ready in {timeout_s:.0f} s: {output()}")
        time.sleep(poll_s)
