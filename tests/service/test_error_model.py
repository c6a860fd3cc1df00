"""One error model: every error the service's own checks (and FastAPI's request validation)
answer is listed for its operation in /openapi.json and matches the documented body."""

from collections.abc import Iterator
from typing import Any

import pytest
from bundle_factory import FactoryBundle, prototype_item
from fastapi.testclient import TestClient
from openapi_check import assert_documented
from service_testing import item_body

from service import errors
from service.app import create_app
from service.config import Settings

KEY = {"X-API-Key": "k"}
GOOD = item_body(prototype_item(2, "error-model-item"))

# (what, method, path, request keyword arguments, expected status)
CASES: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("no API key", "POST", "/items", {"json": GOOD}, 401),
    ("wrong API key", "DELETE", "/items/item-0001", {"headers": {"X-API-Key": "nope"}}, 401),
    ("not JSON nor multipart", "POST", "/items", {"content": b"x", "headers": {**KEY, "content-type": "text/plain"}},
     415),
    ("invalid JSON", "POST", "/items", {"content": b"{", "headers": {**KEY, "content-type": "application/json"}}, 422),
    ("missing image", "POST", "/items", {"json": {"item_id": "a", "fields": {"title": "t"}}, "headers": KEY}, 422),
    ("unknown text field", "POST", "/items", {"json": {**GOOD, "fields": {"colour": "red"}}, "headers": KEY}, 422),
    ("not base64", "POST", "/items", {"json": {**GOOD, "image_base64": "%%%"}, "headers": KEY}, 422),
    ("not an image", "POST", "/items", {"json": {**GOOD, "image_base64": "AAAA"}, "headers": KEY}, 422),
    ("created", "POST", "/items", {"json": GOOD, "headers": KEY}, 201),
    ("exists", "POST", "/items", {"json": GOOD, "headers": KEY}, 409),
    ("body over the limit", "POST", "/items", {"content": b"x" * 70_000, "headers": KEY}, 413),
    ("image_url disabled", "POST", "/items",
     {"json": {**{k: v for k, v in GOOD.items() if k != "image_base64"}, "image_url": "https://x/y.png"},
      "headers": KEY}, 422),
    ("no such item", "GET", "/items/nope", {}, 404),
    ("id too long", "GET", f"/items/{'i' * 300}", {}, 422),
    ("delete no such item", "DELETE", "/items/never-there", {"headers": KEY}, 404),
    ("k out of range", "GET", "/users/user-001/recommendations?k=0", {}, 422),
    ("k not a number", "GET", "/users/user-001/recommendations?k=abc", {}, 422),
    ("control character in id", "GET", "/users/a%00b/recommendations", {}, 422),
    ("a '/' in a user id", "GET", "/users/a/b/recommendations", {}, 404),
    ("unknown items", "POST", "/users/user-001/interactions", {"json": {"item_ids": ["ghost"]}, "headers": KEY}, 422),
    ("no item ids", "POST", "/users/user-001/interactions", {"json": {"item_ids": []}, "headers": KEY}, 422),
    ("body not UTF-8", "POST", "/users/user-001/interactions",
     {"content": b"\xff", "headers": {**KEY, "content-type": "application/json"}}, 400),
]


@pytest.fixture(scope="module")
def client(factory: FactoryBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(bundle=factory.path, data_dir=tmp_path_factory.mktemp("error-model"), api_key="k",
                        max_body_bytes=65_536)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def openapi(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()


@pytest.mark.parametrize(("what", "method", "path", "kwargs", "status"), CASES, ids=[case[0] for case in CASES])
def test_each_answer_is_documented_with_its_body(client: TestClient, openapi: dict[str, Any], what: str,
                                                 method: str, path: str, kwargs: dict[str, Any], status: int) -> None:
    response = client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert_documented(openapi, method, path, status, body)
    if status >= 400:
        assert isinstance(body["detail"], str) and body["detail"], body


def test_validation_errors_say_where_and_what(client: TestClient) -> None:
    body = client.get("/users/user-001/recommendations?k=0").json()
    assert body["errors"] == [{"loc": ["query", "k"], "msg": "Input should be greater than or equal to 1",
                               "type": "greater_than_equal"}]
    assert body["detail"] == "query k: Input should be greater than or equal to 1"
    unknown = client.post("/users/user-001/interactions", json={"item_ids": ["ghost", "item-0001"]}, headers=KEY)
    assert unknown.json()["unknown_item_ids"] == ["ghost"]


def test_every_kind_of_service_error_is_exercised_above() -> None:
    kinds = {cls.status_code for cls in errors.ServiceError.__subclasses__()}
    assert kinds <= {case[4] for case in CASES}


def test_the_document_has_one_error_model(openapi: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in openapi["components"]["schemas"]  # FastAPI's default 422 (detail: array)
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {status}"
