"""?explain=true, item view weights, GET /items/{id}/image, GET /users, GET /users/{id}, GET /bundle."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import FactoryBundle, prototype_item
from fastapi.testclient import TestClient
from PIL import Image
from service_testing import item_body

from cliper.bundle import THUMBNAILS, read_bundle
from cliper.manifest import Fusion
from cliper.thumbnails import THUMBNAIL_OFFSETS, THUMBNAIL_SIDE
from service.explain import summary


def test_explanations_name_the_history_items_with_the_largest_inner_products(client: TestClient,
                                                                            factory: FactoryBundle) -> None:
    bundle = read_bundle(factory.path, verify=False)
    user = "user-006"
    response = client.get(f"/users/{user}/recommendations", params={"k": 4, "explain": True})
    assert response.status_code == 200, response.text
    history = factory.seen[user]
    history_vectors = bundle.item_vectors[[bundle.item_ids.index(i) for i in history]]
    for entry in response.json()["items"]:
        row = bundle.item_ids.index(entry["item_id"])
        products = history_vectors @ bundle.item_vectors[row]
        best = np.argsort(-products)[:3]
        explanation = entry["explanation"]
        assert [c["item_id"] for c in explanation["because"]] == [history[i] for i in best]
        np.testing.assert_allclose([c["score"] for c in explanation["because"]], products[best], rtol=1e-5)
        weights = bundle.view_weights[row] / bundle.view_weights[row].sum()
        np.testing.assert_allclose(list(explanation["view_weights"].values()), weights, rtol=1e-5)
        assert explanation["summary"].startswith("the image agrees with")


def test_without_explain_there_is_no_explanation(client: TestClient) -> None:
    items = client.get("/users/user-006/recommendations", params={"k": 2}).json()["items"]
    assert all("explanation" not in entry for entry in items)


def test_an_ingested_items_view_weights_equal_the_offline_ones(client: TestClient, factory: FactoryBundle) -> None:
    item = prototype_item(2, "new-helmet")
    item.fields["brand"] = "Totally unrelated words about cheese"
    assert client.post("/items", json=item_body(item)).status_code == 201
    body = client.get("/items/new-helmet").json()
    offline = factory.offline_encoding(item.fields, item.image).view_weights
    np.testing.assert_allclose(list(body["view_weights"].values()), offline / offline.sum(), rtol=1e-4, atol=1e-6)
    assert body["fields"] == item.fields and body["source"] == "ingested"


def test_a_bundle_item_shows_its_exported_fields(client: TestClient, factory: FactoryBundle) -> None:
    body = client.get(f"/items/{factory.items[5].item_id}").json()
    assert body["source"] == "bundle" and body["fields"] == factory.items[5].fields


@pytest.mark.parametrize(("weights", "mode", "expected"), [
    ({"title": 0.4, "brand": 0.05, "description": 0.55}, "attention",
     "the image agrees with the title and the description, not the brand"),
    ({"title": 0.3, "brand": 0.35, "description": 0.35}, "attention", "the image agrees with every view about equally"),
    ({"title": 0.05, "brand": 0.3, "global": 0.65}, "attention",
     "the image agrees with the global view, not the title"),
    ({"title": 0.5, "brand": 0.5}, "mean", "this model's fusion (mean) weighs the views by a fixed rule, not by the image"),
])
def test_view_weight_summaries(weights: dict[str, float], mode: str, expected: str) -> None:
    assert summary(weights, Fusion(mode=mode)) == expected


def test_a_bundle_items_image_is_its_thumbnail(client: TestClient, factory: FactoryBundle) -> None:
    response = client.get(f"/items/{factory.items[0].item_id}/image")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumbnail = Image.open(io.BytesIO(response.content))
    original = Image.open(io.BytesIO(factory.items[0].image))
    assert thumbnail.format == "JPEG" and max(thumbnail.size) <= THUMBNAIL_SIDE
    assert thumbnail.size == original.size  # small images are not enlarged
    colours = np.asarray(thumbnail.convert("RGB"), dtype=float).mean(axis=(0, 1))
    np.testing.assert_allclose(colours, np.asarray(original.convert("RGB"), dtype=float).mean(axis=(0, 1)), atol=12)


def test_an_ingested_items_image_is_the_stored_original(client: TestClient) -> None:
    item = prototype_item(1, "new-flute")
    client.post("/items", json=item_body(item))
    response = client.get("/items/new-flute/image")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == item.image


def test_images_of_unknown_or_deleted_items_are_404(client: TestClient, factory: FactoryBundle) -> None:
    assert client.get("/items/nope/image").status_code == 404
    assert client.delete(f"/items/{factory.items[1].item_id}").status_code == 200
    assert client.get(f"/items/{factory.items[1].item_id}/image").status_code == 404


def test_a_bundle_without_thumbnails_says_so(factory: FactoryBundle, make_client, tmp_path: Path) -> None:  # noqa: ANN001
    bare = tmp_path / "bare"
    shutil.copytree(factory.path, bare)
    manifest = json.loads((bare / "manifest.json").read_text())
    for name in (THUMBNAILS, THUMBNAIL_OFFSETS):
        (bare / name).unlink()
        del manifest["files"][name]
    (bare / "manifest.json").write_text(json.dumps(manifest))
    with make_client(bundle=bare) as client:
        response = client.get(f"/items/{factory.items[0].item_id}/image")
        assert response.status_code == 404 and "--no-thumbnails" in response.json()["detail"]
        assert client.get("/bundle").json()["thumbnails"] is False


def test_users_and_a_users_history(client: TestClient, factory: FactoryBundle) -> None:
    assert client.get("/users", params={"limit": 3}).json()["users"] == ["user-000", "user-001", "user-002"]
    body = client.get("/users/user-002").json()
    assert body == {"user_id": "user-002", "known": True, "history": factory.seen["user-002"],
                    "interactions": len(factory.seen["user-002"])}
    client.post("/users/newcomer/interactions", json={"item_ids": ["item-0001"]})
    assert client.get("/users/newcomer").json()["history"] == ["item-0001"]
    assert client.get("/users/stranger").json() == {"user_id": "stranger", "known": False, "history": [],
                                                    "interactions": 0}
    assert client.get("/users", params={"limit": 0}).status_code == 422


def test_bundle_info(client: TestClient, factory: FactoryBundle) -> None:
    body = client.get("/bundle").json()
    assert body["fields"] == ["title", "brand", "categories", "description"]
    assert body["list_fields"] == {"categories": "|"}
    assert body["items"] == len(factory.items) and body["thumbnails"] is True and body["fusion"] == "attention"
