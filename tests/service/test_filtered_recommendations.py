"""Filters and exclusions on GET /users/{id}/recommendations, against a brute-force ranking."""

import numpy as np
import pytest
from bundle_factory import FactoryBundle, prototype_item
from fastapi.testclient import TestClient
from service_testing import item_body

from cliper.bundle import read_bundle

pytestmark = pytest.mark.both_stores


def passes(fields: dict[str, str], field: str, value: str) -> bool:
    """The documented rule, written out: case-insensitive equality, `categories` split on '|'."""
    text = fields.get(field, "")
    pieces = text.split("|") if field == "categories" else [text]
    return value.strip().casefold() in {piece.strip().casefold() for piece in pieces}


def expected_ranking(factory: FactoryBundle, user: str, keep: set[str]) -> list[str]:
    """The user's exact ranking over the items in `keep`, seen items left out."""
    bundle = read_bundle(factory.path, verify=False)
    scores = bundle.item_vectors @ bundle.user_vectors[bundle.user_ids.index(user)]
    seen = set(factory.seen[user])
    order = [bundle.item_ids[row] for row in np.argsort(-scores, kind="stable")]
    return [item_id for item_id in order if item_id in keep and item_id not in seen]


def get(client: TestClient, user: str, **params: object) -> dict:
    response = client.get(f"/users/{user}/recommendations", params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(("filters", "k"), [
    (["categories:ESPRESSO"], 10),  # a list field, another case: a quarter of the items
    (["brand:GuitarCo", "categories:violin"], 10),  # ANDed
    (["title:{title of item-0004}"], 1000),  # a plain field: equality, a handful of items
])
def test_filtered_recommendations_are_the_exact_ranking_among_passing_items(
        client: TestClient, factory: FactoryBundle, filters: list[str], k: int) -> None:
    user = "user-004"  # cluster 0
    filters = [spec.replace("{title of item-0004}", factory.items[4].fields["title"].upper()) for spec in filters]
    keep = {item.item_id for item in factory.items
            if all(passes(item.fields, *spec.split(":", 1)) for spec in filters)}
    expected = expected_ranking(factory, user, keep)
    assert 0 < len(expected) < len(factory.items) / 3  # the filter is selective
    body = get(client, user, k=k, filter=filters)
    assert [entry["item_id"] for entry in body["items"]] == expected[:k]
    assert len(body["items"]) == min(k, len(expected))


def test_exclusions_leave_out_items_and_the_next_ones_move_up(client: TestClient, factory: FactoryBundle) -> None:
    user = "user-001"
    everything = {item.item_id for item in factory.items}
    top = expected_ranking(factory, user, everything)
    body = get(client, user, k=5, exclude=[",".join(top[:2]), top[3]])
    assert [entry["item_id"] for entry in body["items"]] == [top[2], *top[4:8]]


def test_an_unknown_user_gets_the_most_popular_passing_items(client: TestClient, factory: FactoryBundle) -> None:
    bundle = read_bundle(factory.path, verify=False)
    keep = [row for row, item in enumerate(factory.items) if passes(item.fields, "categories", "piano")]
    order = sorted(keep, key=lambda row: (-bundle.popularity[row], row))
    body = get(client, "nobody", k=7, filter="categories:piano", exclude=bundle.item_ids[order[0]])
    assert body["fallback"] is True
    assert [entry["item_id"] for entry in body["items"]] == [bundle.item_ids[row] for row in order[1:8]]


def test_an_ingested_item_passes_filters_at_once(client: TestClient) -> None:
    item = prototype_item(2, "new-racket")
    item.fields["categories"] = "Rackets | Limited Edition"
    assert client.post("/items", json=item_body(item)).status_code == 201
    body = get(client, "user-002", k=5, filter="categories:limited edition")
    assert [entry["item_id"] for entry in body["items"]] == ["new-racket"]
    assert client.get("/items/new-racket").json()["fields"]["categories"] == "Rackets | Limited Edition"


def test_a_filter_nothing_passes_gives_no_items(client: TestClient) -> None:
    assert get(client, "user-003", k=10, filter="brand:NoSuchBrand")["items"] == []


@pytest.mark.parametrize(("params", "message"), [
    ({"filter": "categories"}, "field:value"),
    ({"filter": ":mugs"}, "field"),
    ({"filter": "categories:"}, "value"),
    ({"filter": "colour:red"}, "colour"),
    ({"filter": [f"title:t{i}" for i in range(17)]}, "16"),
    ({"exclude": ",".join(f"i{i}" for i in range(1001))}, "1000"),
    ({"k": 0}, "greater than or equal to 1"),
    ({"k": 1001}, "less than or equal to 1000"),
])
def test_malformed_selections_are_422_saying_what_is_wrong(client: TestClient, params: dict, message: str) -> None:
    response = client.get("/users/user-001/recommendations", params=params)
    assert response.status_code == 422, response.text
    assert message in response.text
