"""Several worker processes under uvicorn's supervisor, each with its own listening socket.

`uvicorn --workers N` shares one listening socket: whichever worker's event loop wakes first
accepts the waiting connections, so a burst of keep-alive connections splits unevenly (24/8 and
32/0 of 32 were seen in the serving benchmark) and the busier worker sets the latency tail.
Here every worker binds its own socket on the same port with `SO_REUSEPORT` and the kernel
spreads new connections over them by a hash of the client's address and port (17/15 and 18/14
in the same benchmark; p99 at concurrency 32 fell from 15-19 ms to 13-15 ms).

One consequence of SO_REUSEPORT: a second copy of the service started by the same user on the
same port shares it with the first instead of failing (a rolling restart can use that; a
program without SO_REUSEPORT on the port is refused at start-up).

uvicorn's supervisor (`uvicorn.supervisors.Multiprocess`: restarts, signals, health checks) is
kept. It hands its sockets to each worker by pickling them; `ReusePortSocket` is what it gets
instead of a socket: unpickling it in a worker binds that worker's own socket.

`server_options` holds every worker's limits on clients: a deadline and a size cap for request
headers (`service.http_protocol`), the keep-alive timeout, and a cap on connections and requests
in flight past which a request gets uvicorn's 503.
"""

import socket
import sys
from functools import partial
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from service.config import Settings
from service.http_protocol import HeaderLimitsProtocol


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options from the settings: address, logging, timeouts and the connection limit."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "http": partial(HeaderLimitsProtocol, header_timeout_s=settings.timeout_header_s,
                        max_header_bytes=settings.max_header_bytes),
        "timeout_keep_alive": settings.timeout_keep_alive_s,
        "limit_concurrency": settings.max_concurrency,
    }


def reuse_port_available() -> bool:
    """Linux spreads connections over SO_REUSEPORT sockets; other systems may not."""
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


def bind_reuse_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` that other SO_REUSEPORT sockets of this user may share."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class ReusePortSocket:
    """Stands in for a listening socket in the supervisor: a worker unpickles it as its own
    socket bound by `bind_reuse_port`."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def __reduce__(self) -> tuple[object, tuple[str, int]]:
        return bind_reuse_port, (self.host, self.port)


def run_workers(config: uvicorn.Config) -> None:
    """Serve `config.app` with `config.workers` processes, one SO_REUSEPORT socket each."""
    if config.port == 0:
        sys.exit("several workers need a fixed --port (with port 0 each would listen on a port of its own)")
    try:  # a port taken by another program fails here, once, rather than in every worker
        bind_reuse_port(config.host, config.port).close()
    except OSError as exc:
        sys.exit(f"cannot listen on {config.host}:{config.port}: {exc}")
    try:
        Multiprocess(config, sockets=[ReusePortSocket(config.host, config.port)]).run()  # type: ignore[list-item]
    except KeyboardInterrupt:
        pass
