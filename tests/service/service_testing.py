"""Small helpers shared by the service tests (a uniquely named module, importable from any test)."""

import base64
import socket
import subprocess
import time
from typing import Any

import redis
from bundle_factory import SyntheticItem


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def item_body(item: SyntheticItem, item_id: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id or item.item_id, "fields": item.fields, "image_base64": b64(item.image)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A throw-away redis-server on its own port that a test can stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
