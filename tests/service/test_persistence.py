"""A restart replays everything acknowledged: items, replacements, deletions, interactions (both store backends)."""

import numpy as np
import pytest
from bundle_factory import FactoryBundle, prototype_item
from service_testing import item_body
from store_testing import Database

pytestmark = pytest.mark.both_stores


def state(client, users: list[str], item_ids: list[str]) -> dict:
    return {
        "recs": {u: client.get(f"/users/{u}/recommendations", params={"k": 20}).json()["items"] for u in users},
        "items": {i: client.get(f"/items/{i}", params={"include_vector": True}).json() for i in item_ids},
    }


def test_restart_replays_acknowledged_changes(make_client, factory: FactoryBundle) -> None:
    replaced, deleted = factory.items[1].item_id, factory.items[2].item_id
    with make_client() as client:
        assert client.post("/items", json=item_body(prototype_item(0, "new-mug"))).status_code == 201
        assert client.post("/items", json=item_body(prototype_item(2, "gone-soon"))).status_code == 201
        assert client.post("/items", params={"replace": True},
                           json=item_body(prototype_item(3, replaced))).status_code == 201
        assert client.delete(f"/items/{deleted}").status_code == 200
        assert client.delete("/items/gone-soon").status_code == 200
        for user, items in (("user-000", ["new-mug", replaced]), ("stranger", ["new-mug"])):
            assert client.post(f"/users/{user}/interactions", json={"item_ids": items}).status_code == 201
        before = state(client, ["user-000", "stranger", "user-001"], ["new-mug", replaced])
    with make_client() as client:
        after = state(client, ["user-000", "stranger", "user-001"], ["new-mug", replaced])
        assert client.get(f"/items/{deleted}").status_code == 404
        assert client.get("/items/gone-soon").status_code == 404
        more = client.post("/users/user-000/interactions", json={"item_ids": [factory.items[0].item_id]}).json()
        assert more["interactions_since_bundle"] == 3  # 2 before the restart + this one
    assert after["items"] == before["items"]
    assert after["items"][replaced]["source"] == "ingested"
    assert after["recs"] == before["recs"]
    assert not {"new-mug", replaced} & {entry["item_id"] for entry in after["recs"]["user-000"]}


def test_items_stored_under_another_bundle_are_re_encoded(make_client, database: Database) -> None:
    item = prototype_item(1, "old-model-item")
    with make_client() as client:
        client.post("/items", json=item_body(item))
        fresh = client.get("/items/old-model-item", params={"include_vector": True}).json()["vector"]
    database.query("UPDATE items SET bundle_version = 'older', vector = ? WHERE item_id = 'old-model-item'",
                   np.zeros(16, dtype=np.float32).tobytes())  # pretend an older model wrote it
    with make_client() as client:
        replayed = client.get("/items/old-model-item", params={"include_vector": True}).json()["vector"]
    np.testing.assert_allclose(replayed, fresh, atol=1e-6)
    # re-encoded once, logged as this bundle's vector of the write; a second start finds it done
    assert database.count("item_changes", "source_seq IS NOT NULL") == 1
    with make_client():
        assert database.count("item_changes", "source_seq IS NOT NULL") == 1
