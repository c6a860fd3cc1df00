"""image_url: fetched only under an allow-listed prefix, no redirects, size-capped."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from bundle_factory import prototype_item
from service_testing import item_body

from service.fetch import url_allowed

ITEM = prototype_item(2, "from-url")


class ImageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/img/ball.png":
            self._reply(200, ITEM.image)
        elif self.path == "/img/big.png":
            self._reply(200, b"0" * 300_000)
        elif self.path == "/img/moved.png":
            self.send_response(302)
            self.send_header("Location", "/img/ball.png")
            self.end_headers()
        else:
            self._reply(404, b"no")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_allowed_url_is_fetched(make_client, image_server: str) -> None:
    body = {"item_id": "from-url", "fields": ITEM.fields, "image_url": f"{image_server}/img/ball.png"}
    with make_client(image_url_allow_list=[f"{image_server}/img/"], max_body_bytes=200_000) as client:
        assert client.post("/items", json=body).status_code == 201
        client.post("/items", json=item_body(ITEM, "from-base64"))
        vectors = [client.get(f"/items/{i}", params={"include_vector": True}).json()["vector"]
                   for i in ("from-url", "from-base64")]
        np.testing.assert_allclose(*vectors, atol=1e-6)
        for path, status, message in (("/other/ball.png", 422, "not under an allowed prefix"),
                                      ("/img/moved.png", 422, "HTTP 302"),
                                      ("/img/missing.png", 422, "HTTP 404"),
                                      ("/img/big.png", 413, "over 200000 bytes")):
            response = client.post("/items", json={**body, "item_id": "x", "image_url": image_server + path})
            assert response.status_code == status and message in response.json()["detail"], response.text


def test_url_allow_list_matching() -> None:
    allow = ["https://cdn.example.com/img/"]
    assert url_allowed("https://cdn.example.com/img/a.png", allow)
    assert not url_allowed("http://cdn.example.com/img/a.png", allow)
    assert not url_allowed("https://cdn.example.com.evil.net/img/a.png", allow)
    assert not url_allowed("https://cdn.example.com@evil.net/img/a.png", allow)
    assert not url_allowed("https://cdn.example.com/img/../secret", allow)
    assert not url_allowed("https://cdn.example.com/private/a.png", allow)
