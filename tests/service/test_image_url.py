"""image_url: fetched only under an allow-listed prefix (scheme, host, port and whole path
segments), redirects followed only within it, size-capped."""

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from pydantic import ValidationError
from bundle_factory import prototype_item
from service_testing import item_body

from service.errors import BadInput
from service.fetch import check_url

ITEM = prototype_item(2, "from-url")
HITS: list[str] = []  # paths the image server was asked for


class ImageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        HITS.append(self.path)
        port = self.server.server_address[1]
        redirects = {
            "/img/moved.png": "/img/ball.png",
            "/img/moved-twice.png": f"http://127.0.0.1:{port}/img/moved.png",
            "/img/outside.png": "/private/ball.png",
            "/img/other-host.png": f"http://localhost:{port}/img/ball.png",
            "/img/dot-dot.png": "/img/%2e%2e/private/ball.png",
            "/img/with-user.png": f"http://user@127.0.0.1:{port}/img/ball.png",
            "/img/loop.png": "/img/loop.png",
        }
        if self.path in ("/img/ball.png", "/private/ball.png"):
            self._reply(200, ITEM.image)
        elif self.path == "/img/big.png":
            self._reply(200, b"0" * 300_000)
        elif self.path in redirects:
            self.send_response(302)
            self.send_header("Location", redirects[self.path])
            self.send_header("Content-Length", "0")
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
                                      ("/img/missing.png", 422, "HTTP 404"),
                                      ("/img/big.png", 413, "over 200000 bytes")):
            response = client.post("/items", json={**body, "item_id": "x", "image_url": image_server + path})
            assert response.status_code == status and message in response.json()["detail"], response.text


@pytest.mark.parametrize("path", ["/img/moved.png", "/img/moved-twice.png"])
def test_redirects_within_the_allow_list_are_followed(make_client, image_server: str, path: str) -> None:
    body = {"item_id": "moved", "fields": ITEM.fields, "image_url": image_server + path}
    with make_client(image_url_allow_list=[f"{image_server}/img"]) as client:
        response = client.post("/items", json=body)
        assert response.status_code == 201, response.text


REDIRECTS_OUT = [
    ("/img/outside.png", "/private/ball.png", "not under an allowed prefix"),
    ("/img/other-host.png", "http://localhost:", "not under an allowed prefix"),
    ("/img/dot-dot.png", "/img/%2e%2e/private/ball.png", "'.' or '..'"),
    ("/img/with-user.png", "http://user@127.0.0.1", "user info"),
    ("/img/loop.png", "/img/loop.png", "more than 5 redirects"),
]


@pytest.mark.parametrize(("path", "location", "message"), REDIRECTS_OUT, ids=[c[0] for c in REDIRECTS_OUT])
def test_redirects_that_leave_the_allow_list_are_refused(make_client, image_server: str, path: str, location: str,
                                                         message: str) -> None:
    body = {"item_id": "redirected", "fields": ITEM.fields, "image_url": image_server + path}
    with make_client(image_url_allow_list=[f"{image_server}/img"]) as client:
        HITS.clear()
        response = client.post("/items", json=body)
        detail = response.json()["detail"]
        assert response.status_code == 422 and "redirect" in detail and message in detail, response.text
        assert location in detail, detail
        assert "/private/ball.png" not in HITS, HITS


ALLOW = ["https://cdn.example.com/img", "http://127.0.0.1:8080/pics/", "https://cdn/img", "https://bücher.example/b"]
URLS = [
    ("https://cdn.example.com/img/a.png", None),
    ("https://cdn.example.com/img/sub/a%20b.png?w=200#top", None),
    ("HTTPS://CDN.Example.COM/img/a.png", None),
    ("https://cdn.example.com:443/img/a.png", None),
    ("https://cdn.example.com/img/./a.png", None),
    ("http://127.0.0.1:8080/pics/a.png", None),
    ("https://xn--bcher-kva.example/b/a.png", None),
    ("https://cdn.example.com/img-private/a.png", "not under an allowed prefix"),
    ("https://cdn.example.com/imgx", "not under an allowed prefix"),
    ("https://cdn.example.com/private/a.png", "not under an allowed prefix"),
    ("https://cdn.example.com/img/../private/a.png", "not under an allowed prefix"),
    ("https://cdn.example.com/img/%2e%2e/private/a.png", "'.' or '..'"),
    ("https://cdn.example.com/img/%2E%2E/private/a.png", "'.' or '..'"),
    ("https://cdn.example.com/img/.%2e/private/a.png", "'.' or '..'"),
    ("https://cdn.example.com/img/%2e/a.png", "'.' or '..'"),
    ("https://cdn.example.com/img/..%2fprivate/a.png", "encoded"),
    ("https://cdn.example.com/img%2f..%2fprivate/a.png", "encoded"),
    ("https://cdn.example.com/img/%2e%2e%2fprivate%2fa.png", "encoded"),
    ("https://cdn.example.com/img/..%5cprivate/a.png", "encoded"),
    ("https://cdn.example.com/img/..\\private/a.png", "encoded"),
    ("https://cdn.example.com/img/%252e%252e/private/a.png", "encoded"),
    ("https://cdn.example.com/img/a%00.png", "control character"),
    ("https://user@cdn.example.com/img/x.jpg", "user info"),
    ("https://user:secret@cdn.example.com/img/x.jpg", "user info"),
    ("https://cdn@evil/img/x.jpg", "user info"),
    ("https://cdn.example.com@evil.net/img/a.png", "user info"),
    ("https://cdn.evil/img/a.png", "not under an allowed prefix"),
    ("https://cdn.example.com.evil.net/img/a.png", "not under an allowed prefix"),
    ("https://cdn.example.com./img/a.png", "not under an allowed prefix"),
    ("http://cdn.example.com/img/a.png", "not under an allowed prefix"),
    ("https://cdn.example.com:8443/img/a.png", "not under an allowed prefix"),
    ("http://127.0.0.1/pics/a.png", "not under an allowed prefix"),
    ("http://localhost:8080/pics/a.png", "not under an allowed prefix"),
    ("http://127.0.0.1:8080/pics2/a.png", "not under an allowed prefix"),
    ("ftp://cdn.example.com/img/a.png", "http or https"),
    ("file:///img/a.png", "http or https"),
    ("https:///img/a.png", "host"),
    ("not a url", "http or https"),
]


@pytest.mark.parametrize(("url", "refusal"), URLS, ids=[c[0] for c in URLS])
def test_url_allow_list_matching(url: str, refusal: str | None) -> None:
    if refusal is None:
        check_url(url, ALLOW)
    else:
        with pytest.raises(BadInput, match=re.escape(refusal)):
            check_url(url, ALLOW)


def test_default_ports_are_the_same_as_none() -> None:
    check_url("http://host.example/x/a.png", ["http://host.example:80/x/"])
    check_url("https://host.example:443/x/a.png", ["https://host.example/x"])


@pytest.mark.parametrize(("entry", "message"), [("https://user@cdn.example.com/img", "user info"),
                                                ("ftp://cdn.example.com/img", "http or https"),
                                                ("cdn.example.com/img", "http or https"),
                                                ("https://cdn.example.com/img/%2e%2e", "'.' or '..'"),
                                                ("https://cdn.example.com/img?token=1", "query")])
def test_a_bad_allow_list_entry_stops_start_up(make_settings, entry: str, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        make_settings(image_url_allow_list=[entry])
