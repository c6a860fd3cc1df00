"""GET /users/{id}/recommendations: model ranking, seen items excluded, popularity fallback."""

import numpy as np
import pytest
from bundle_factory import FactoryBundle
from fastapi.testclient import TestClient

from cliper.bundle import read_bundle

pytestmark = pytest.mark.both_stores  # every test with a store runs on SQLite and PostgreSQL


def recommend(client: TestClient, user: str, k: int = 10) -> dict:
    response = client.get(f"/users/{user}/recommendations", params={"k": k})
    assert response.status_code == 200, response.text
    return response.json()


def test_known_user_gets_their_cluster_ranked_by_score(client: TestClient, factory: FactoryBundle) -> None:
    bundle = read_bundle(factory.path)
    clusters = {item.item_id: item.cluster for item in factory.items}
    for user, cluster in list(factory.user_clusters.items())[:8]:
        body = recommend(client, user, k=10)
        assert body["fallback"] is False and body["bundle_version"] == factory.manifest.bundle_version
        ids = [entry["item_id"] for entry in body["items"]]
        scores = [entry["score"] for entry in body["items"]]
        assert len(ids) == 10 and all(clusters[i] == cluster for i in ids)
        assert scores == sorted(scores, reverse=True)
        user_vector = bundle.user_vectors[bundle.user_ids.index(user)]
        expected = bundle.item_vectors[[bundle.item_ids.index(i) for i in ids]] @ user_vector
        np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_seen_items_are_excluded_and_the_rest_is_the_exact_ranking(client: TestClient,
                                                                    factory: FactoryBundle) -> None:
    bundle = read_bundle(factory.path)
    user = "user-005"
    body = recommend(client, user, k=1000)
    ids = [entry["item_id"] for entry in body["items"]]
    seen = set(factory.seen[user])
    assert len(ids) == len(factory.items) - len(seen) and not seen & set(ids)
    scores = bundle.item_vectors @ bundle.user_vectors[bundle.user_ids.index(user)]
    order = [bundle.item_ids[i] for i in np.argsort(-scores, kind="stable") if bundle.item_ids[i] not in seen]
    assert ids[:20] == order[:20]


def test_unknown_user_gets_the_popularity_fallback(client: TestClient, factory: FactoryBundle) -> None:
    bundle = read_bundle(factory.path)
    body = recommend(client, "someone-new", k=5)
    assert body["fallback"] is True and body["from_cache"] is False
    scores = [entry["score"] for entry in body["items"]]
    assert scores == sorted(bundle.popularity.tolist(), reverse=True)[:5]


def test_deleted_items_leave_rankings_and_fallback(client: TestClient, factory: FactoryBundle) -> None:
    top = recommend(client, "user-002", k=3)["items"][0]["item_id"]
    popular = recommend(client, "someone-new", k=3)["items"][0]["item_id"]
    for item_id in {top, popular}:
        assert client.delete(f"/items/{item_id}").status_code == 200
    assert top not in [entry["item_id"] for entry in recommend(client, "user-002", k=1000)["items"]]
    assert popular not in [entry["item_id"] for entry in recommend(client, "someone-new", k=1000)["items"]]
