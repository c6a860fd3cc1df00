"""POST / GET / DELETE /items: ingestion, parity with the offline vectors, replace, micro-batching."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import FactoryBundle, build_bundle, make_item, prototype_item
from fastapi.testclient import TestClient
from service_testing import item_body

from service.app import create_app
from service.config import Settings

pytestmark = pytest.mark.both_stores  # every test with a store runs on SQLite and PostgreSQL


def vector_of(client: TestClient, item_id: str) -> np.ndarray:
    response = client.get(f"/items/{item_id}", params={"include_vector": True})
    assert response.status_code == 200, response.text
    return np.array(response.json()["vector"], dtype=np.float32)


def test_ingested_vector_equals_the_offline_vector(client: TestClient, factory: FactoryBundle) -> None:
    rng = np.random.default_rng(7)
    items = [make_item(rng, 2, "parity-long", long_text=True), make_item(rng, 1, "parity-short")]
    items[1].fields.pop("brand", None)
    for item in items:
        response = client.post("/items", json=item_body(item))
        assert response.status_code == 201, response.text
        np.testing.assert_allclose(vector_of(client, item.item_id), factory.offline_vector(item.fields, item.image),
                                   atol=1e-5)
    # the bundle's own catalog vectors were made by the offline path too
    catalog_item = factory.items[10]
    client.post("/items", json=item_body(catalog_item, "catalog-copy"))
    np.testing.assert_allclose(vector_of(client, "catalog-copy"), vector_of(client, catalog_item.item_id), atol=1e-5)


def test_parity_without_attention_mask(tmp_path: Path) -> None:
    """A CLIP-style text encoder that takes only input_ids (pads masked inside the graph)."""
    bundle = build_bundle(tmp_path / "bundle", n_items=16, n_users=4, attention_mask=False, pooling="sum",
                          max_chunks=2)
    item = make_item(np.random.default_rng(3), 0, "plain", long_text=True)
    with TestClient(create_app(Settings(bundle=bundle.path, data_dir=tmp_path / "data"))) as client:
        assert client.post("/items", json=item_body(item)).status_code == 201
        np.testing.assert_allclose(vector_of(client, "plain"), bundle.offline_vector(item.fields, item.image),
                                   atol=1e-5)


def test_create_get_delete(client: TestClient, factory: FactoryBundle) -> None:
    item = prototype_item(0, "mug-1")
    created = client.post("/items", json=item_body(item))
    assert created.status_code == 201
    assert created.json() == {"item_id": "mug-1", "index_size": len(factory.items) + 1,
                              "bundle_version": factory.manifest.bundle_version, "replaced": False}
    got = client.get("/items/mug-1").json()
    assert got["source"] == "ingested" and got["fields"] == item.fields and got["vector"] is None
    assert client.get(f"/items/{factory.items[0].item_id}").json()["source"] == "bundle"
    deleted = client.delete("/items/mug-1")
    assert deleted.status_code == 200 and deleted.json()["index_size"] == len(factory.items)
    assert client.get("/items/mug-1").status_code == 404
    assert client.delete("/items/mug-1").status_code == 404


def test_multipart_upload_gives_the_json_vector(client: TestClient) -> None:
    item = prototype_item(3, "json-way")
    assert client.post("/items", json=item_body(item)).status_code == 201
    response = client.post("/items", data={"item_id": "form-way", **item.fields},
                           files={"image": ("fern.png", item.image, "image/png")})
    assert response.status_code == 201, response.text
    np.testing.assert_allclose(vector_of(client, "form-way"), vector_of(client, "json-way"), atol=1e-6)


def test_existing_id_is_409_unless_replace(client: TestClient, factory: FactoryBundle) -> None:
    catalog_id = factory.items[5].item_id
    before = vector_of(client, catalog_id)
    conflict = client.post("/items", json=item_body(prototype_item(1, catalog_id)))
    assert conflict.status_code == 409 and "replace=true" in conflict.json()["detail"]
    replaced = client.post("/items", params={"replace": True}, json=item_body(prototype_item(1, catalog_id)))
    assert replaced.status_code == 201
    assert replaced.json()["replaced"] is True and replaced.json()["index_size"] == len(factory.items)
    assert not np.allclose(vector_of(client, catalog_id), before)
    assert client.get(f"/items/{catalog_id}").json()["source"] == "ingested"


def test_an_item_with_an_id_that_has_slashes(client: TestClient) -> None:
    assert client.post("/items", json=item_body(prototype_item(2, "shop/42/b"))).status_code == 201
    assert client.get("/items/shop/42/b").json()["item_id"] == "shop/42/b"
    assert client.delete("/items/shop%2F42%2Fb").status_code == 200


def test_concurrent_ingestion_is_micro_batched_and_stored_together(make_client, factory: FactoryBundle) -> None:
    rng = np.random.default_rng(11)
    items = [make_item(rng, i % 4, f"batch-{i}") for i in range(12)]
    with make_client(max_batch_size=8, max_batch_wait_ms=200) as client:
        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(lambda item: client.post("/items", json=item_body(item)), items))
        assert [r.status_code for r in responses] == [201] * 12
        metrics = client.get("/metrics").text
        batches = _sample(metrics, "cliper_encode_batch_size_count")
        encoded = _sample(metrics, "cliper_encode_batch_size_sum")
        assert encoded == 12 + 1  # + the warm-up item
        assert batches <= 5, f"12 concurrent items took {batches - 1} batches"
        assert _sample(metrics, "cliper_store_write_items_sum") == 12
        transactions = _sample(metrics, "cliper_store_write_items_count")
        assert transactions < 12, "items encoded together should be stored in shared transactions"
        for item in items[:3]:
            np.testing.assert_allclose(vector_of(client, item.item_id),
                                       factory.offline_vector(item.fields, item.image), atol=1e-5)


@pytest.mark.parametrize("cluster", [0, 3])
def test_new_item_enters_the_top_k_of_users_who_like_its_cluster(client: TestClient, factory: FactoryBundle,
                                                                  cluster: int) -> None:
    users = [user for user, c in factory.user_clusters.items() if c == cluster][:4]
    assert client.post("/items", json=item_body(prototype_item(cluster, f"proto-{cluster}"))).status_code == 201
    for user in users:
        assert f"proto-{cluster}" in top_ten(client, user), user
    other = next(user for user, c in factory.user_clusters.items() if c != cluster)
    assert f"proto-{cluster}" not in top_ten(client, other)


def top_ten(client: TestClient, user: str) -> list[str]:
    body = client.get(f"/users/{user}/recommendations", params={"k": 10}).json()
    return [entry["item_id"] for entry in body["items"]]


def _sample(metrics_text: str, name: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_retried_create_or_delete_replays_its_first_answer(client: TestClient, factory: FactoryBundle) -> None:
    item = prototype_item(2, "retried-item")
    key = {"Idempotency-Key": "create-retried-item"}
    created = client.post("/items", json=item_body(item), headers=key)
    assert created.status_code == 201, created.text
    # a client that rebuilds the request (multipart, a new boundary) is the same request
    again = client.post("/items", data={"item_id": "retried-item", **item.fields},
                        files={"image": ("x.png", item.image, "image/png")}, headers=key)
    assert again.status_code == 201 and again.json() == created.json(), again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert client.post("/items", json=item_body(item)).status_code == 409  # without the key: a second create
    other_image = item_body(prototype_item(3, "retried-item"))
    assert client.post("/items", json=other_image, headers=key).status_code == 422  # same key, other request

    delete_key = {"Idempotency-Key": "delete-retried-item"}
    deleted = [client.delete("/items/retried-item", headers=delete_key) for _ in range(2)]
    assert [response.status_code for response in deleted] == [200, 200]
    assert deleted[0].json() == deleted[1].json() == {"item_id": "retried-item", "index_size": len(factory.items),
                                                      "bundle_version": factory.manifest.bundle_version}
    assert client.delete("/items/retried-item").status_code == 404
