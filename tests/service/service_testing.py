"""Small helpers shared by the service tests (a uniquely named module, importable from any test)."""

import base64
import socket
from typing import Any

from bundle_factory import SyntheticItem


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def item_body(item: SyntheticItem, item_id: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id or item.item_id, "fields": item.fields, "image_base64": b64(item.image)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
