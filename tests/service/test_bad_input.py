"""Every bad input gets a 4xx whose message says what to fix, never a 500."""

import io
import json
import resource
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bundle_factory import FactoryBundle, prototype_item
from fastapi.testclient import TestClient
from PIL import Image
from served import served
from service_testing import b64

from service.app import create_app
from service.config import Settings

GOOD = prototype_item(1, "good")
TITLE = {"title": "a violin"}


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries almost no pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def jpeg(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def item(image: bytes = GOOD.image, **changes: Any) -> dict[str, Any]:
    body = {"item_id": "bad-test", "fields": TITLE, "image_base64": b64(image)}
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def without(key: str) -> dict[str, Any]:
    body = item()
    del body[key]
    return body


@pytest.fixture(scope="module")
def client(factory: FactoryBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(bundle=factory.path, data_dir=tmp_path_factory.mktemp("bad-input"),
                        max_body_bytes=16 * 2**20, max_text_chars=20_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


POST_ITEMS = [
    ("corrupt bytes", {"json": item(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)}, 422, "image"),
    ("truncated png", {"json": item(jpeg((64, 64))[:300])}, 422, "truncated"),
    ("not an image", {"json": item(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n")}, 422, "not a format"),
    ("20000x20000 image", {"json": item(png_header(20000, 20000))}, 422, "pixels"),
    ("empty image", {"json": item(b"")}, 422, "image"),
    ("empty text field", {"json": item(fields={"title": ""})}, 422, "empty"),
    ("blank text field", {"json": item(fields={"title": "   \n"})}, 422, "empty"),
    ("megabyte text field", {"json": item(fields={"description": "word " * 200_000})}, 422, "longer than"),
    ("unknown text field", {"json": item(fields={"colour": "red"})}, 422, "unknown text field"),
    ("non-string text field", {"json": item(fields={"title": 5})}, 422, "string"),
    ("no text fields", {"json": item(fields={})}, 422, "at least one text field"),
    ("missing fields key", {"json": without("fields")}, 422, "at least one text field"),
    ("missing item_id", {"json": without("item_id")}, 422, "item_id"),
    ("missing image", {"json": without("image_base64")}, 422, "image_base64"),
    ("two images", {"json": item(image_url="http://x/y.png")}, 422, "exactly one"),
    ("invalid base64", {"json": item(image_base64="not base64!!")}, 422, "base64"),
    ("empty id", {"json": item(item_id="")}, 422, "empty"),
    ("blank id", {"json": item(item_id="   ")}, 422, "empty"),
    ("10 KB id", {"json": item(item_id="x" * 10_240)}, 422, "at most 256"),
    ("id with NUL", {"json": item(item_id="a\x00b")}, 422, "control characters"),
    ("id with newline", {"json": item(item_id="a\nb")}, 422, "control characters"),
    ("id with spaces around", {"json": item(item_id=" a ")}, 422, "whitespace"),
    ("invalid UTF-8", {"content": b'{"item_id": "\xff\xfe", "fields": {}}',
                       "headers": {"content-type": "application/json"}}, 422, "invalid unicode"),
    ("not JSON", {"content": b"{item_id: 1", "headers": {"content-type": "application/json"}}, 422, "json"),
    ("JSON list", {"json": [1, 2]}, 422, "object"),
    ("unknown JSON key", {"json": item(colour="red")}, 422, "extra"),
    ("wrong content type", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "multipart"),
    ("no content type", {"content": b"hello"}, 415, "application/json"),
    ("image_url without allow-list", {"json": {"item_id": "u", "fields": TITLE, "image_url": "http://127.0.0.1/a.png"}},
     422, "disabled"),
    ("multipart without image", {"data": {"item_id": "m", **TITLE}}, 415, "multipart"),
    ("multipart image as text", {"files": {"item_id": (None, "m"), "image": (None, "text")}}, 422, "file field"),
    ("multipart two files", {"data": {"item_id": "m", **TITLE},
                             "files": [("image", ("a.png", GOOD.image)), ("other", ("b.png", GOOD.image))]}, 4, "file"),
    ("multipart bad id", {"data": {"item_id": "a\x01b", **TITLE}, "files": {"image": ("a.png", GOOD.image)}},
     422, "control characters"),
    ("multipart without boundary", {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
     422, "cannot be parsed"),
    ("multipart truncated", {"content": b'--x\r\nContent-Disposition: form-data; name="item_id"\r\n\r\nm',
                             "headers": {"content-type": "multipart/form-data; boundary=x"}}, 422, "image"),
    ("multipart too many parts", {"data": {f"f{i}": "v" for i in range(70)}, "files": {"image": ("a.png", GOOD.image)}},
     422, "at most 64"),
]


@pytest.mark.parametrize(("case", "request_kwargs", "status", "message"), POST_ITEMS, ids=[c[0] for c in POST_ITEMS])
def test_post_items_rejects(client: TestClient, case: str, request_kwargs: dict, status: int, message: str) -> None:
    response = client.post("/items", **request_kwargs)
    assert_rejected(response, status, message)


def test_a_50_mb_body_is_413_with_or_without_content_length(client: TestClient) -> None:
    big = b"0" * (50 * 2**20)
    response = client.post("/items", content=big, headers={"content-type": "application/json"})
    assert_rejected(response, 413, "over the limit")

    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield b"0" * 2**20

    response = client.post("/items", content=chunks(), headers={"content-type": "application/json"})
    assert_rejected(response, 413, "over the limit")


def test_image_over_the_configured_pixel_limit(factory: FactoryBundle, tmp_path) -> None:
    settings = Settings(bundle=factory.path, data_dir=tmp_path, max_image_pixels=100 * 100)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert_rejected(client.post("/items", json=item(jpeg((120, 100)))), 422, "at most 10000 pixels")
        assert client.post("/items", json=item(jpeg((100, 100)))).status_code == 201


OTHER = [
    ("get", "/users/user-001/recommendations?k=0", None, 422, "greater than or equal to 1"),
    ("get", f"/users/user-001/recommendations?k={10**9}", None, 422, "less than or equal to 1000"),
    ("get", "/users/user-001/recommendations?k=abc", None, 422, "integer"),
    ("get", "/users/user-001/recommendations?k=-3", None, 422, "greater than"),
    ("get", f"/users/{'u' * 10_240}/recommendations", None, 422, "at most 256"),
    ("get", "/users/a%00b/recommendations", None, 422, "control characters"),
    ("get", "/users/a%0Ab/recommendations", None, 422, "control characters"),
    ("get", f"/items/{'i' * 10_240}", None, 422, "at most 256"),
    ("get", "/items/nope", None, 404, "not in the catalog"),
    ("delete", "/items/a%07b", None, 422, "control characters"),
    ("delete", "/items/never-there", None, 404, "not in the catalog"),
    ("post", "/users/u/interactions", {"json": {"item_ids": []}}, 422, "at least 1"),
    ("post", "/users/u/interactions", {"json": {"item_ids": ["x"] * 1001}}, 422, "at most 1000"),
    ("post", "/users/u/interactions", {"json": {"item_ids": ["item-0001", "ghost"]}}, 422, "not in the catalog"),
    ("post", "/users/u/interactions", {"json": {"item_ids": ["bad\x00id"]}}, 422, "control characters"),
    ("post", "/users/u/interactions", {"json": {}}, 422, "item_ids"),
    ("post", "/users/u/interactions", {"content": b"\xff", "headers": {"content-type": "application/json"}}, 400,
     "error parsing the body"),
    ("post", f"/users/{'u' * 10_240}/interactions", {"json": {"item_ids": ["item-0001"]}}, 422, "at most 256"),
]


@pytest.mark.parametrize(("method", "url", "request_kwargs", "status", "message"), OTHER,
                         ids=[f"{c[0]} {c[1][:40]} {c[3]}" for c in OTHER])
def test_other_endpoints_reject(client: TestClient, method: str, url: str, request_kwargs: dict | None,
                                status: int, message: str) -> None:
    assert_rejected(client.request(method, url, **(request_kwargs or {})), status, message)


def test_still_healthy_after_all_that(client: TestClient) -> None:
    assert client.get("/health/ready").status_code == 200
    assert client.post("/items", json=item(item_id="fine-after-all")).status_code == 201


def assert_rejected(response: Any, status: int, message: str) -> None:
    """`status` exactly, or any 4xx when `status` is 4; the message (any case) in the body."""
    assert response.status_code < 500, response.text
    if status == 4:
        assert 400 <= response.status_code < 500, response.text
    else:
        assert response.status_code == status, response.text
    body = response.json()
    assert body.get("detail"), body
    assert message.lower() in json.dumps(body).lower(), body


def test_multipart_text_that_is_not_utf8_is_refused_and_utf8_is_kept(client: TestClient) -> None:
    refused = client.post("/items", data={"item_id": "latin", "title": "caf\xe9".encode("latin-1")},
                          files={"image": ("a.png", GOOD.image)})
    assert_rejected(refused, 422, "form field 'title' is not valid UTF-8")
    assert client.get("/items/latin").status_code == 404
    accepted = client.post("/items", data={"item_id": "utf8", "title": "café ☕"}, files={"image": ("a.png", GOOD.image)})
    assert accepted.status_code == 201, accepted.text
    assert client.get("/items/utf8").json()["fields"] == {"title": "café ☕"}


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


EXTREME_SHAPES = [((1, 400_000), 422), ((400_000, 1), 422), ((2, 100_000), 422), ((100_000, 3), 422),
                  ((4000, 3000), 201)]


def test_extreme_shapes_are_refused_under_a_memory_cap(factory: FactoryBundle, tmp_path) -> None:
    """A 1.6 KB PNG of 1x400000 pixels passes the pixel limit; resized along its short side it
    used to need gigabytes. Under a cap of 1.5 GiB over the idle server's address space, absurd
    shapes get a 422 naming the aspect-ratio limit and an ordinary photo is still ingested."""
    with served(factory.path, tmp_path / "data") as server:
        pid = server.process.pid
        cap = address_space(pid) + int(1.5 * 2**30)
        resource.prlimit(pid, resource.RLIMIT_AS, (cap, cap))
        for (width, height), status in EXTREME_SHAPES:
            body = item(png((width, height)), item_id=f"shape-{width}x{height}")
            response = httpx.post(f"{server.base}/items", json=body, timeout=120)
            if status == 201:
                assert response.status_code == 201, response.text
            else:
                assert_rejected(response, status, "aspect ratio")
                assert "at most 20" in response.json()["detail"], response.text
        assert server.process.poll() is None, server.log.read_text(errors="replace")


def address_space(pid: int) -> int:
    """The process's virtual memory size in bytes (VmSize of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmSize for process {pid}")
