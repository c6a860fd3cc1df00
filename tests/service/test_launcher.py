"""service.launcher: one SO_REUSEPORT socket per worker, connections spread by the kernel."""

import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_factory import FactoryBundle
from service_testing import free_port

from service.launcher import ReusePortSocket, reuse_port_available

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not reuse_port_available(), reason="SO_REUSEPORT spreading is Linux's")


def accepted(listener: socket.socket) -> int:
    count = 0
    while True:
        try:
            listener.accept()[0].close()
        except BlockingIOError:
            return count
        count += 1


def test_each_unpickled_stand_in_is_a_socket_of_its_own_and_connections_spread_over_them() -> None:
    port = free_port()
    stand_in = pickle.dumps(ReusePortSocket("127.0.0.1", port))
    listeners = [pickle.loads(stand_in) for _ in range(2)]  # what two worker processes get
    clients = []
    try:
        for listener in listeners:
            assert listener.getsockname() == ("127.0.0.1", port)
            listener.listen(128)
            listener.setblocking(False)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
        counts = [accepted(listener) for listener in listeners]
        assert sum(counts) == 64
        # a shared socket lets one busy worker take them all; the kernel's hash split is even-ish
        # (below 16 of 64 has a probability of about 3e-5)
        assert min(counts) >= 16, counts
    finally:
        for sock in [*clients, *listeners]:
            sock.close()


def run_service(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_a_port_taken_by_another_program_is_refused_once(factory: FactoryBundle) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = run_service("--bundle", str(factory.path), "--port", str(port), "--workers", "2")
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_several_workers_need_a_fixed_port(factory: FactoryBundle) -> None:
    result = run_service("--bundle", str(factory.path), "--port", "0", "--workers", "2")
    assert result.returncode != 0
    assert "several workers need a fixed --port" in result.stderr
