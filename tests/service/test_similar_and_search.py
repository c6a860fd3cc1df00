"""GET /items/{id}/similar and POST /search against brute force and the torch reference encoders."""

import io

import numpy as np
import pytest
import torch
from bundle_factory import CLUSTER_WORDS, FactoryBundle, prototype_item
from fastapi.testclient import TestClient
from PIL import Image
from service_testing import b64, item_body

from cliper.bundle import read_bundle
from cliper.images import preprocess
from service.search import BLEND_POOL


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def search_vectors(factory: FactoryBundle) -> tuple[list[str], np.ndarray]:
    bundle = read_bundle(factory.path, verify=False)
    return bundle.item_ids, (bundle.clip_image + bundle.clip_text) / 2


@torch.no_grad()
def reference_text(factory: FactoryBundle, text: str) -> np.ndarray:
    """The query's unit embedding by the torch text module (the offline path)."""
    reference = factory.reference
    ids = reference.tokenizer([text])
    return unit(reference.text(ids, (ids != 0).long()).numpy()[0])


@torch.no_grad()
def reference_image(factory: FactoryBundle, image: bytes) -> np.ndarray:
    reference = factory.reference
    pixels = preprocess(Image.open(io.BytesIO(image)).convert("RGB"), reference.preprocess)
    return unit(reference.image(torch.from_numpy(pixels[None])).numpy()[0])


def ranked(ids: list[str], vectors: np.ndarray, query: np.ndarray, k: int) -> list[str]:
    return [ids[row] for row in np.argsort(-(vectors @ query), kind="stable")[:k]]


def test_similar_items_are_the_nearest_vectors_without_the_item(client: TestClient, factory: FactoryBundle) -> None:
    bundle = read_bundle(factory.path, verify=False)
    row = 17
    scores = bundle.item_vectors @ bundle.item_vectors[row]
    scores[row] = -np.inf
    expected = [bundle.item_ids[i] for i in np.argsort(-scores, kind="stable")[:8]]
    response = client.get(f"/items/{bundle.item_ids[row]}/similar", params={"k": 8})
    assert response.status_code == 200, response.text
    assert [entry["item_id"] for entry in response.json()["items"]] == expected


def test_similar_items_of_an_item_ingested_a_moment_ago_and_with_a_filter(client: TestClient,
                                                                          factory: FactoryBundle) -> None:
    assert client.post("/items", json=item_body(prototype_item(1, "new-violin"))).status_code == 201
    vector = factory.offline_vector(prototype_item(1, "new-violin").fields, prototype_item(1, "new-violin").image)
    bundle = read_bundle(factory.path, verify=False)
    keep = [row for row, item in enumerate(factory.items) if "violin" in item.fields["categories"].split("|")]
    expected = [bundle.item_ids[row] for row in sorted(keep, key=lambda row: -(bundle.item_vectors[row] @ vector))]
    response = client.get("/items/new-violin/similar", params={"k": 5, "filter": "categories:Violin", "explain": True})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [entry["item_id"] for entry in items] == expected[:5]
    weights = items[0]["explanation"]["view_weights"]
    stored = bundle.view_weights[bundle.item_ids.index(items[0]["item_id"])]
    assert list(weights) == ["title", "brand", "categories", "description", "global"]
    np.testing.assert_allclose(list(weights.values()), stored / stored.sum(), rtol=1e-5)


def test_similar_items_of_an_unknown_item_is_404(client: TestClient) -> None:
    response = client.get("/items/no-such-item/similar")
    assert response.status_code == 404 and "no-such-item" in response.json()["detail"]


def test_text_search_ranks_by_the_mean_of_image_and_text_cosines(client: TestClient, factory: FactoryBundle) -> None:
    ids, vectors = search_vectors(factory)
    text = "espresso mug with a ceramic kettle"
    expected = ranked(ids, vectors, reference_text(factory, text), 10)
    response = client.post("/search", json={"text": text, "k": 10})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [hit["item_id"] for hit in body["items"]] == expected
    assert body["personalized"] is False and all(hit["score"] == hit["clip_score"] for hit in body["items"])


def test_image_search_and_both_together(client: TestClient, factory: FactoryBundle) -> None:
    ids, vectors = search_vectors(factory)
    image = prototype_item(3, "query").image
    image_query = reference_image(factory, image)
    response = client.post("/search", json={"image_base64": b64(image), "k": 6})
    assert [hit["item_id"] for hit in response.json()["items"]] == ranked(ids, vectors, image_query, 6)
    text = " ".join(CLUSTER_WORDS[3])
    both = unit(image_query + reference_text(factory, text))
    response = client.post("/search", json={"image_base64": b64(image), "text": text, "k": 6,
                                            "filters": ["categories:tulip"]})
    keep = {item.item_id for item in factory.items if "tulip" in item.fields["categories"].split("|")}
    expected = [item_id for item_id in ranked(ids, vectors, both, len(ids)) if item_id in keep][:6]
    assert [hit["item_id"] for hit in response.json()["items"]] == expected


def test_an_ingested_item_is_searchable_at_once_by_its_offline_embeddings(client: TestClient,
                                                                           factory: FactoryBundle) -> None:
    item = prototype_item(0, "new-teapot")
    assert client.post("/items", json=item_body(item)).status_code == 201
    encoding = factory.offline_encoding(item.fields, item.image)
    ids, vectors = search_vectors(factory)
    ids, vectors = [*ids, "new-teapot"], np.vstack([vectors, (encoding.clip_image + encoding.clip_text) / 2])
    query = reference_image(factory, prototype_item(0, "query").image)
    hits = client.post("/search", json={"image_base64": b64(item.image), "k": 1000}).json()["items"]
    assert len(hits) == len(ids)
    found = [hit["item_id"] for hit in hits].index("new-teapot")
    expected = vectors @ query
    np.testing.assert_allclose(hits[found]["clip_score"], expected[-1], rtol=1e-4)
    assert found == int((expected > expected[-1] + 1e-5).sum())  # its place among the rest


def test_a_users_blend_orders_the_clip_pool_by_the_blended_z_scores(client: TestClient,
                                                                    factory: FactoryBundle) -> None:
    bundle = read_bundle(factory.path, verify=False)
    ids, vectors = search_vectors(factory)
    query = reference_text(factory, "guitar")
    pool = ranked(ids, vectors, query, BLEND_POOL)
    rows = [ids.index(item_id) for item_id in pool]
    clip = vectors[rows] @ query
    user = bundle.user_vectors[bundle.user_ids.index("user-003")] @ bundle.item_vectors[rows].T
    blend = 0.7 * (clip - clip.mean()) / clip.std() + 0.3 * (user - user.mean()) / user.std()
    response = client.post("/search", json={"text": "guitar", "k": 5, "user_id": "user-003", "user_weight": 0.3})
    body = response.json()
    assert body["personalized"] is True
    assert [hit["item_id"] for hit in body["items"]] == [pool[i] for i in np.argsort(-blend, kind="stable")[:5]]
    np.testing.assert_allclose([hit["user_score"] for hit in body["items"]],
                               [user[pool.index(hit["item_id"])] for hit in body["items"]], rtol=1e-5)
    alone = client.post("/search", json={"text": "guitar", "k": 5, "user_id": "nobody"}).json()
    assert alone["personalized"] is False and [hit["item_id"] for hit in alone["items"]] == pool[:5]


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"k": 5}, 422, "send a text, an image_base64, or both"),
    ({"text": ""}, 422, "at least 1 character"),
    ({"text": "mug", "k": 0}, 422, "greater than or equal to 1"),
    ({"image_base64": b64(b"not an image at all")}, 422, "not a format Pillow can read"),
    ({"image_base64": "%%%"}, 422, "not valid base64"),
    ({"text": "mug", "filters": ["size:XL"]}, 422, "size"),
    ({"text": "x" * 20_001}, 422, "shorten it"),
])
def test_bad_searches_are_4xx_saying_what_to_fix(client: TestClient, body: dict, status: int, message: str) -> None:
    response = client.post("/search", json=body)
    assert response.status_code == status, response.text
    assert message in response.text


def test_a_search_that_is_not_json_is_415(client: TestClient) -> None:
    response = client.post("/search", content=b"text=mug", headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415 and "application/json" in response.json()["detail"]


@pytest.mark.parametrize(("params", "message"), [
    ({"k": 0}, "greater than or equal to 1"),
    ({"k": 1001}, "less than or equal to 1000"),
    ({"filter": "colour:red"}, "colour"),
    ({"filter": "brand"}, "field:value"),
])
def test_bad_similar_item_requests_are_422(client: TestClient, factory: FactoryBundle, params: dict,
                                           message: str) -> None:
    response = client.get(f"/items/{factory.items[0].item_id}/similar", params=params)
    assert response.status_code == 422 and message in response.text
