"""With an API key set, write endpoints need X-API-Key; reads stay open."""

from bundle_factory import prototype_item
from service_testing import item_body

KEY = "s3cret-key"


def test_write_endpoints_need_the_key(make_client, factory) -> None:
    body = item_body(prototype_item(0, "auth-item"))
    with make_client(api_key=KEY) as client:
        missing = client.post("/items", json=body)
        assert missing.status_code == 401 and "X-API-Key" in missing.json()["detail"]
        wrong = client.post("/items", json=body, headers={"X-API-Key": "guess"})
        assert wrong.status_code == 401 and "does not match" in wrong.json()["detail"]
        assert client.get("/items/auth-item").status_code == 404  # nothing was ingested
        assert client.post("/items", json=body, headers={"X-API-Key": KEY}).status_code == 201
        interactions = {"item_ids": ["auth-item"]}
        assert client.post("/users/u1/interactions", json=interactions).status_code == 401
        assert client.post("/users/u1/interactions", json=interactions, headers={"X-API-Key": KEY}).status_code == 201
        assert client.delete("/items/auth-item").status_code == 401
        assert client.delete("/items/auth-item", headers={"X-API-Key": KEY}).status_code == 200
        for url in ("/users/u1/recommendations", f"/items/{factory.items[0].item_id}", "/health/ready", "/metrics"):
            assert client.get(url).status_code == 200, url


def test_no_key_configured_means_open_writes(client) -> None:
    assert client.post("/items", json=item_body(prototype_item(1, "open-item"))).status_code == 201
