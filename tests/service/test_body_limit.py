"""A body over CLIPER_MAX_BODY_BYTES gets the documented 413 on every endpoint, chunked or with
a Content-Length, whether or not the endpoint reads its body (real server)."""

import re
from collections.abc import Iterator

import httpx
import pytest
from bundle_factory import FactoryBundle
from openapi_check import assert_documented
from served import Served, served

from service.app import create_app
from service.config import Settings

LIMIT = 4096
API_KEY = "body-limit-key"


def operations(factory: FactoryBundle) -> list[tuple[str, str]]:
    """(method, path with its parameters filled in) of every operation the app documents."""
    paths = create_app(Settings(bundle=factory.path)).openapi()["paths"]
    return [(method.upper(), re.sub(r"\{[^}]+\}", "item-0001", path))
            for path, methods in paths.items() for method in methods]


@pytest.fixture(scope="module")
def server(factory: FactoryBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(factory.path, tmp_path_factory.mktemp("body-limit") / "data", "--max-body-bytes", str(LIMIT),
                env={"CLIPER_API_KEY": API_KEY}) as server:
        yield server


@pytest.fixture(scope="module")
def openapi(server: Served) -> dict:
    return httpx.get(f"{server.base}/openapi.json").json()


def chunks(size: int) -> Iterator[bytes]:
    """`size` bytes in 1000-byte pieces: httpx sends a generator with Transfer-Encoding: chunked."""
    for start in range(0, size, 1000):
        yield b"x" * min(1000, size - start)


def test_every_endpoint_is_covered(factory: FactoryBundle) -> None:
    assert {("POST", "/items"), ("DELETE", "/items/item-0001"), ("POST", "/users/item-0001/interactions"),
            ("GET", "/users/item-0001/recommendations")} <= set(operations(factory))


@pytest.mark.parametrize("encoding", ["chunked", "content-length"])
def test_a_body_just_over_the_limit_is_413_on_every_endpoint(
    factory: FactoryBundle, server: Served, openapi: dict, encoding: str
) -> None:
    responses = {}
    for method, path in operations(factory):
        content = chunks(LIMIT + 1) if encoding == "chunked" else b"x" * (LIMIT + 1)
        responses[method, path] = httpx.request(method, f"{server.base}{path}", content=content,
                                                headers={"content-type": "application/json", "X-API-Key": API_KEY})
    statuses = {f"{method} {path}": response.status_code for (method, path), response in responses.items()}
    assert set(statuses.values()) == {413}, statuses
    for (method, path), response in responses.items():
        assert f"limit of {LIMIT} bytes" in response.json()["detail"]
        assert_documented(openapi, method, path, 413, response.json())


def test_a_chunked_body_at_the_limit_is_read_as_usual(server: Served) -> None:
    body = b'{"item_ids": ["item-0002"]}'
    padded = body + b" " * (LIMIT - len(body))  # JSON allows trailing whitespace
    response = httpx.post(f"{server.base}/users/user-001/interactions", content=iter([padded[:2000], padded[2000:]]),
                          headers={"content-type": "application/json", "X-API-Key": API_KEY})
    assert response.status_code == 201, response.text
    assert response.json()["recorded"] == 1
