"""Slow and idle clients cannot hold connections: the real server (`python -m service`) closes
them within its header and keep-alive timeouts, and past its connection limit a request gets a
503 at once. Raw sockets, so nothing in a client library hides what the server does."""

import selectors
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from bundle_factory import FactoryBundle
from served import Served, served

HEADER_TIMEOUT_S = 1.0
KEEP_ALIVE_S = 1.0
N = 40  # connections of each kind
LIMIT = 3 * N + 10
MAX_HEADER_BYTES = 16384
SLACK_S = 2.0  # timers fire on a shared 2-core machine: allow for scheduling
REQUEST = b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n"


@pytest.fixture(scope="module")
def server(factory: FactoryBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(factory.path, tmp_path_factory.mktemp("slow-clients") / "data",
                "--timeout-header-s", str(HEADER_TIMEOUT_S), "--timeout-keep-alive-s", str(KEEP_ALIVE_S),
                "--max-concurrency", str(LIMIT), "--max-header-bytes", str(MAX_HEADER_BYTES)) as server:
        yield server


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_response(sock: socket.socket) -> bytes:
    """One complete response (headers and a Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(4096)
    return head


def kept_alive(port: int) -> socket.socket:
    """A connection that made one request and then idles, keep-alive."""
    sock = connect(port)
    sock.sendall(REQUEST)
    assert read_response(sock).startswith(b"HTTP/1.1 200")
    return sock


def slow(port: int) -> socket.socket:
    """A connection that has sent part of a request's headers (it trickles the rest)."""
    sock = connect(port)
    sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Slow: ")
    return sock


def wait_until_closed(socks: list[socket.socket], trickle: set[socket.socket], seconds: float
                      ) -> tuple[dict[socket.socket, float], dict[socket.socket, bytes]]:
    """When (seconds from now) the server closed each socket, and what it sent before; the sockets in
    `trickle` send one more header byte every 0.2 s meanwhile."""
    started = time.monotonic()
    closed: dict[socket.socket, float] = {}
    received = {sock: b"" for sock in socks}
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    next_trickle = started
    while len(closed) < len(socks) and time.monotonic() - started < seconds:
        if time.monotonic() >= next_trickle:
            next_trickle += 0.2
            for sock in trickle - closed.keys():
                try:
                    sock.send(b"x")
                except OSError:  # reset by the server
                    closed[sock] = time.monotonic() - started
                    selector.unregister(sock)
        for key, _ in selector.select(timeout=0.05):
            sock = key.fileobj
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            received[sock] += data
            if not data:
                closed[sock] = time.monotonic() - started
                selector.unregister(sock)
    selector.close()
    return closed, received


def wait_for_fds(server: Served, at_least: int) -> None:
    """Until the server has accepted the connections just opened (bounded)."""
    deadline = time.monotonic() + 5
    while server.open_fds() < at_least and time.monotonic() < deadline:
        time.sleep(0.02)


def test_slow_and_idle_connections_are_closed_within_the_timeouts(server: Served) -> None:
    baseline = server.open_fds()
    slows = [slow(server.port) for _ in range(N)]
    silent = [connect(server.port) for _ in range(N)]
    kept = [kept_alive(server.port) for _ in range(N)]
    everything = kept + slows + silent
    try:
        wait_for_fds(server, baseline + 2 * N)
        during = server.open_fds()
        closed, received = wait_until_closed(everything, set(slows), HEADER_TIMEOUT_S + KEEP_ALIVE_S + SLACK_S)
        assert during >= baseline + 2 * N  # the server held them (the kept-alive ones may be closing already) ...
        open_still = sum(sock not in closed for sock in everything)
        assert open_still == 0, f"{open_still} of {len(everything)} connections still open"
        # ... and closed each within its timeout
        assert max(closed[sock] for sock in kept) <= KEEP_ALIVE_S + SLACK_S
        assert max(closed[sock] for sock in slows + silent) <= HEADER_TIMEOUT_S + SLACK_S
        assert all(received[sock].startswith(b"HTTP/1.1 408") for sock in slows)  # told why
        assert all(received[sock] == b"" for sock in silent + kept)
    finally:
        for sock in everything:
            sock.close()
    deadline = time.monotonic() + 5
    while server.open_fds() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.open_fds() <= baseline


def test_past_the_connection_limit_a_request_gets_503_until_connections_close(server: Served) -> None:
    baseline = server.open_fds()
    held = [connect(server.port) for _ in range(LIMIT)]
    try:
        wait_for_fds(server, baseline + LIMIT)
        refused = httpx.get(f"{server.base}/health/live", timeout=5)
        assert refused.status_code == 503, refused.text
        closed, _ = wait_until_closed(held, set(), HEADER_TIMEOUT_S + SLACK_S)
        assert len(closed) == LIMIT  # the header timeout frees the slots ...
    finally:
        for sock in held:
            sock.close()
    assert httpx.get(f"{server.base}/health/live", timeout=5).status_code == 200  # ... and requests pass again


@pytest.mark.parametrize("header_bytes", [12_000, 100_000, 5_000_000])
def test_headers_over_the_cap_get_431(server: Served, header_bytes: int) -> None:
    with connect(server.port) as sock:
        sent = b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * header_bytes + b"\r\n\r\n"
        try:
            sock.sendall(sent)
        except OSError:  # closed by the server before all of it was sent
            pass
        head = read_response(sock)
    if header_bytes < MAX_HEADER_BYTES:
        assert head.startswith(b"HTTP/1.1 200"), head
    else:
        assert head.startswith(b"HTTP/1.1 431"), head
