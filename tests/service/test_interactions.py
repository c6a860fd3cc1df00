"""POST /users/{id}/interactions: seen exclusion, cache invalidation, the fold-in rule, Idempotency-Key."""

import time

import numpy as np
import pytest
from bundle_factory import FactoryBundle, prototype_item
from fastapi.testclient import TestClient
from service_testing import item_body
from store_testing import Database

from cliper.bundle import read_bundle

pytestmark = pytest.mark.both_stores


def recommend(client: TestClient, user: str, k: int = 10) -> dict:
    return client.get(f"/users/{user}/recommendations", params={"k": k}).json()


def interact(client: TestClient, user: str, item_ids: list[str]) -> dict:
    response = client.post(f"/users/{user}/interactions", json={"item_ids": item_ids})
    assert response.status_code == 201, response.text
    return response.json()


def vectors(client: TestClient, item_ids: list[str]) -> np.ndarray:
    return np.array([client.get(f"/items/{i}", params={"include_vector": True}).json()["vector"] for i in item_ids])


def test_interacted_items_leave_the_recommendations(client: TestClient) -> None:
    first = recommend(client, "user-001")
    assert recommend(client, "user-001")["from_cache"] is True
    taken = [entry["item_id"] for entry in first["items"][:3]]
    assert interact(client, "user-001", taken) == {
        "user_id": "user-001", "recorded": 3, "interactions_since_bundle": 3, "bundle_version": first["bundle_version"]
    }
    after = recommend(client, "user-001")
    assert after["from_cache"] is False  # the cached vector was invalidated
    assert not set(taken) & {entry["item_id"] for entry in after["items"]}


def test_fold_in_for_a_bundle_user(client: TestClient, factory: FactoryBundle) -> None:
    bundle = read_bundle(factory.path)
    user = "user-006"
    liked = [item.item_id for item in factory.items if item.cluster == 1][:2]  # user-006 likes cluster 2
    interact(client, user, liked)
    n0 = len(factory.seen[user])
    expected_user = (n0 * bundle.user_vectors[bundle.user_ids.index(user)] + vectors(client, liked).sum(0)) / (n0 + 2)
    body = recommend(client, user, k=5)
    ids = [entry["item_id"] for entry in body["items"]]
    np.testing.assert_allclose([entry["score"] for entry in body["items"]], vectors(client, ids) @ expected_user,
                               rtol=1e-4)


def test_a_new_user_gets_a_vector_from_their_interactions(client: TestClient, factory: FactoryBundle) -> None:
    assert recommend(client, "newcomer")["fallback"] is True
    garden = [item.item_id for item in factory.items if item.cluster == 3][:3]
    interact(client, "newcomer", garden[:2])
    assert interact(client, "newcomer", garden[2:])["interactions_since_bundle"] == 3
    body = recommend(client, "newcomer", k=10)
    assert body["fallback"] is False
    clusters = {item.item_id: item.cluster for item in factory.items}
    ids = [entry["item_id"] for entry in body["items"]]
    assert all(clusters[i] == 3 for i in ids) and not set(garden) & set(ids)
    expected_user = vectors(client, garden).mean(0)
    np.testing.assert_allclose([entry["score"] for entry in body["items"]], vectors(client, ids) @ expected_user,
                               rtol=1e-4)


def test_interactions_with_ingested_items_count(client: TestClient) -> None:
    client.post("/items", json=item_body(prototype_item(0, "fresh-mug")))
    interact(client, "mug-fan", ["fresh-mug"])
    body = recommend(client, "mug-fan", k=5)
    assert "fresh-mug" not in [entry["item_id"] for entry in body["items"]]
    assert body["items"][0]["score"] > 0.9  # a near copy of the prototype mug ranks first


def test_unknown_items_are_rejected_with_their_ids(client: TestClient, factory: FactoryBundle) -> None:
    response = client.post("/users/user-001/interactions",
                           json={"item_ids": [factory.items[0].item_id, "ghost-2", "ghost-1"]})
    assert response.status_code == 422
    assert response.json()["unknown_item_ids"] == ["ghost-1", "ghost-2"]
    assert "not in the catalog" in response.json()["detail"]
    assert interact(client, "user-001", [factory.items[0].item_id])["interactions_since_bundle"] == 1


def test_interactions_raise_popularity(client: TestClient, factory: FactoryBundle) -> None:
    rare = factory.items[-1].item_id
    for fan in range(12):
        interact(client, f"fan-{fan}", [rare])
    assert recommend(client, "nobody-yet", k=1)["items"][0]["item_id"] == rare


def count_rows(database: Database, user: str) -> int:
    return database.count("interactions", "user_id = ?", user)


def test_a_retry_with_its_idempotency_key_records_once(client: TestClient, factory: FactoryBundle,
                                                       database: Database) -> None:
    item = factory.items[0].item_id
    sent = [client.post("/users/retrier/interactions", json={"item_ids": [item]}, headers={"Idempotency-Key": "k-1"})
            for _ in range(3)]
    assert [response.status_code for response in sent] == [201] * 3
    assert sent[1].json() == sent[2].json() == sent[0].json()
    assert sent[0].json()["interactions_since_bundle"] == 1
    assert "idempotent-replayed" not in sent[0].headers and sent[1].headers["idempotent-replayed"] == "true"
    assert count_rows(database, "retrier") == 1
    assert interact(client, "retrier", [item])["interactions_since_bundle"] == 2  # no key: a new interaction


def test_a_key_reused_for_another_request_is_refused(client: TestClient, factory: FactoryBundle,
                                                     database: Database) -> None:
    first, second = factory.items[0].item_id, factory.items[1].item_id
    key = {"Idempotency-Key": "order-7"}
    assert client.post("/users/u-a/interactions", json={"item_ids": [first]}, headers=key).status_code == 201
    for user, items in (("u-a", [second]), ("u-b", [first])):  # another body; another path
        refused = client.post(f"/users/{user}/interactions", json={"item_ids": items}, headers=key)
        assert refused.status_code == 422, refused.text
        assert "Idempotency-Key" in refused.json()["detail"] and "new key" in refused.json()["detail"]
    assert (count_rows(database, "u-a"), count_rows(database, "u-b")) == (1, 0)


def test_a_bad_idempotency_key_says_what_to_send(client: TestClient, factory: FactoryBundle,
                                                 database: Database) -> None:
    for bad in ("", "x" * 256, "tab\there"):
        response = client.post("/users/u1/interactions", json={"item_ids": [factory.items[0].item_id]},
                               headers={"Idempotency-Key": bad})
        assert response.status_code == 422, (bad, response.text)
        assert "Idempotency-Key" in response.json()["detail"]
    assert count_rows(database, "u1") == 0


def test_duplicate_ids_in_one_call_count_once(client: TestClient, factory: FactoryBundle,
                                              database: Database) -> None:
    bundle = read_bundle(factory.path)
    user = "user-005"
    a, b = [item.item_id for item in factory.items if item.cluster == 1][:2]
    body = interact(client, user, [a, a, b, a])
    assert (body["recorded"], body["interactions_since_bundle"]) == (2, 2)
    n0 = len(factory.seen[user])
    expected = (n0 * bundle.user_vectors[bundle.user_ids.index(user)] + vectors(client, [a, b]).sum(0)) / (n0 + 2)
    got = recommend(client, user, k=5)
    ids = [entry["item_id"] for entry in got["items"]]
    np.testing.assert_allclose([entry["score"] for entry in got["items"]], vectors(client, ids) @ expected, rtol=1e-4)
    assert count_rows(database, user) == 2


def test_keys_expire(make_client, factory: FactoryBundle) -> None:
    item = factory.items[0].item_id
    with make_client(idempotency_ttl_s=0.5) as client:
        key = {"Idempotency-Key": "short-lived"}
        assert client.post("/users/u9/interactions", json={"item_ids": [item]}, headers=key).status_code == 201
        time.sleep(0.6)
        again = client.post("/users/u9/interactions", json={"item_ids": [item]}, headers=key)
        assert again.status_code == 201 and "idempotent-replayed" not in again.headers
        assert again.json()["interactions_since_bundle"] == 2  # forgotten: recorded as a new interaction
        other = client.post("/users/u9/interactions", json={"item_ids": [factory.items[1].item_id]}, headers=key)
        assert other.status_code == 422  # the key is live again, for the second request
