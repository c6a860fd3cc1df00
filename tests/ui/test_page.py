"""The page at /ui in Chromium against the real service, each flow clicked through.

What the page shows is checked against the factory bundle's own data (users' histories and
clusters, items' fields, view weights computed by the torch reference) or, where the page only
relays an answer the factory cannot predict (a text search, an error message), against the API's
answer to the same request.
"""

import base64
import os
from pathlib import Path

import httpx
from bundle_factory import FactoryBundle, prototype_item
from playwright.sync_api import Locator, Page
from served import Served
from ui_testing import API_KEY, card_ids, loaded_images, settle

K = 12  # the page's default "How many" and its k for similar items and search


def clusters(bundle: FactoryBundle, item_ids: list[str]) -> set[int]:
    by_id = {item.item_id: item.cluster for item in bundle.items}
    return {by_id[item_id] for item_id in item_ids}


def notes(card: Locator) -> list[str]:
    return card.locator("p").all_inner_texts()


def show_user(page: Page, user_id: str, filters: str = "", exclude: str = "") -> None:
    page.get_by_test_id("user-input").fill(user_id)
    page.get_by_test_id("filters-input").fill(filters)
    page.get_by_test_id("exclude-input").fill(exclude)
    page.get_by_test_id("user-submit").click()
    settle(page)


def test_picking_a_user_shows_their_history_and_recommendations(page: Page, ui_bundle: FactoryBundle) -> None:
    user = "user-001"
    seen = ui_bundle.seen[user]
    page.get_by_test_id("k-input").fill("10")
    page.get_by_test_id("user-select").select_option(user)
    settle(page)
    assert page.get_by_test_id("user-input").input_value() == user
    assert sorted(card_ids(page, "history")) == sorted(seen)
    assert loaded_images(page, '[data-testid="history"] img') == len(seen)
    recommended = card_ids(page, "recommendations")
    assert len(recommended) == 10
    assert not set(recommended) & set(seen)
    assert clusters(ui_bundle, recommended) == {ui_bundle.user_clusters[user]}
    assert loaded_images(page, '[data-testid="recommendations"] img') == 10
    for card in page.get_by_test_id("recommendations").get_by_test_id("item-card").all():
        score, summary, because = notes(card)
        assert score.startswith("score ") and summary
        assert because.startswith("because of ")
        assert set(because.removeprefix("because of ").split(", ")) <= set(seen)


def test_filters_and_exclusions_narrow_a_typed_users_recommendations(page: Page, ui_bundle: FactoryBundle) -> None:
    """user-002 likes cluster 2; the filters ask for cluster 0's brand and one of its categories."""
    show_user(page, "user-002", filters="brand: coffeeco ; categories:ESPRESSO")
    fields = {item.item_id: item.fields for item in ui_bundle.items}
    recommended = card_ids(page, "recommendations")
    assert len(recommended) == K
    for item_id in recommended:
        assert fields[item_id].get("brand", "").casefold() == "coffeeco"
        assert "espresso" in fields[item_id]["categories"].split("|")
    show_user(page, "user-002", filters="brand:CoffeeCo; categories:espresso", exclude=",".join(recommended[:2]))
    assert card_ids(page, "recommendations")[: K - 2] == recommended[2:]


def test_an_unknown_user_gets_the_popular_items(page: Page) -> None:
    show_user(page, "nobody-on-the-page")
    assert card_ids(page, "history") == []
    assert "does not know this user" in page.get_by_test_id("recommendations-note").inner_text()
    assert len(card_ids(page, "recommendations")) == K


def test_a_malformed_filter_shows_the_apis_detail(page: Page, service: Served) -> None:
    for malformed in ("categories", "colour:red"):
        show_user(page, "user-003", filters=malformed)
        answer = httpx.get(f"{service.base}/users/user-003/recommendations", params={"filter": malformed})
        assert answer.status_code == 422
        alert = page.get_by_test_id("user-error")
        assert alert.is_visible()
        assert alert.inner_text() == f"422: {answer.json()['detail']}"
        assert malformed in alert.inner_text()
    show_user(page, "user-003")
    assert page.get_by_test_id("user-error").is_hidden()


def test_clicking_an_item_shows_its_view_weights_and_similar_items(page: Page, ui_bundle: FactoryBundle) -> None:
    page.get_by_test_id("user-select").select_option("user-001")
    settle(page)
    item_id = card_ids(page, "recommendations")[0]
    page.get_by_test_id("recommendations").get_by_title(f"Show item {item_id}", exact=True).click()
    settle(page)
    item = next(item for item in ui_bundle.items if item.item_id == item_id)
    assert page.get_by_test_id("item-id").inner_text() == item_id
    listed = page.get_by_test_id("item-fields")
    assert dict(zip(listed.locator("dt").all_inner_texts(), listed.locator("dd").all_inner_texts(),
                    strict=True)) == item.fields
    assert loaded_images(page, '[data-testid="item-image"]') == 1

    views = ui_bundle.manifest.views.view_names
    weights = ui_bundle.offline_encoding(item.fields, item.image).view_weights
    bars = page.get_by_test_id("view-bar")
    assert bars.count() == len(views)
    for bar, view, weight in zip(bars.all(), views, weights, strict=True):
        assert bar.get_attribute("data-view") == view
        assert abs(float(bar.locator(".bar-value").inner_text()) - weight) <= 0.006
        drawn = bar.locator(".bar").bounding_box()["width"] / bar.locator(".bar-track").bounding_box()["width"]
        assert abs(drawn - weight) < 0.01

    similar = card_ids(page, "similar")
    assert len(similar) == K and item_id not in similar
    assert clusters(ui_bundle, similar) == {item.cluster}
    assert loaded_images(page, '[data-testid="similar"] img') == K
    if screenshot := os.environ.get("UI_SCREENSHOT"):  # docs/ui.png: UI_SCREENSHOT=docs/ui.png pytest tests/ui
        page.screenshot(path=screenshot, full_page=True)


def test_searching_by_text_shows_the_apis_ranking(page: Page, service: Served) -> None:
    page.get_by_test_id("search-text").fill("garden tulip")
    page.get_by_test_id("search-submit").click()
    settle(page)
    answer = httpx.post(f"{service.base}/search", json={"text": "garden tulip", "k": K}).json()
    assert card_ids(page, "search-results") == [hit["item_id"] for hit in answer["items"]]
    assert loaded_images(page, '[data-testid="search-results"] img') == K


def drop_file(page: Page, name: str, data: bytes, mime: str) -> None:
    """Drop a file on the page's drop zone, as a drag from the desktop does."""
    page.evaluate("""([name, data, mime]) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: mime }));
        const zone = document.querySelector('[data-testid="drop-zone"]');
        for (const type of ["dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }
    }""", [name, base64.b64encode(data).decode(), mime])
    settle(page)


def test_searching_by_an_image_chosen_or_dropped(page: Page, ui_bundle: FactoryBundle, service: Served,
                                                 tmp_path: Path) -> None:
    chosen = tmp_path / "green.png"
    chosen.write_bytes(prototype_item(1, "query").image)
    page.get_by_test_id("search-image").set_input_files(chosen)
    settle(page)
    assert page.get_by_test_id("search-image-name").inner_text() == "image: green.png"
    assert clusters(ui_bundle, card_ids(page, "search-results")) == {1}

    page.get_by_test_id("search-image-clear").click()
    drop_file(page, "blue.png", prototype_item(2, "query").image, "image/png")
    assert page.get_by_test_id("search-image-name").inner_text() == "image: blue.png"
    found = card_ids(page, "search-results")
    assert len(found) == K and clusters(ui_bundle, found) == {2}

    drop_file(page, "broken.png", b"not an image", "image/png")
    answer = httpx.post(f"{service.base}/search", json={"image_base64": base64.b64encode(b"not an image").decode()})
    assert answer.status_code == 422
    assert page.get_by_test_id("search-error").inner_text() == f"422: {answer.json()['detail']}"


def test_an_ingested_item_is_shown_with_its_similar_items_at_once(page: Page, ui_bundle: FactoryBundle,
                                                                   service: Served, tmp_path: Path) -> None:
    new = prototype_item(3, "ui-new-3")
    image = tmp_path / "new.png"
    image.write_bytes(new.image)
    page.get_by_test_id("ingest-id").fill(new.item_id)
    for field, value in new.fields.items():
        page.get_by_test_id(f"ingest-field-{field}").fill(value)
    page.get_by_test_id("ingest-image").set_input_files(image)

    page.get_by_test_id("api-key").fill("wrong")
    page.get_by_test_id("ingest-submit").click()
    settle(page)
    refused = httpx.post(f"{service.base}/items", headers={"X-API-Key": "wrong"}, json={})
    assert refused.status_code == 401
    assert page.get_by_test_id("ingest-error").inner_text() == f"401: {refused.json()['detail']}"

    page.get_by_test_id("api-key").fill(API_KEY)
    page.get_by_test_id("ingest-submit").click()
    settle(page)
    assert page.get_by_test_id("ingest-error").is_hidden()
    assert new.item_id in page.get_by_test_id("ingest-status").inner_text()
    assert page.get_by_test_id("item-id").inner_text() == new.item_id
    assert page.get_by_test_id("item-source").inner_text().startswith("ingested")
    assert loaded_images(page, '[data-testid="item-image"]') == 1
    assert page.get_by_test_id("view-bar").count() == len(ui_bundle.manifest.views.view_names)
    similar = card_ids(page, "similar")
    assert len(similar) == K and clusters(ui_bundle, similar) == {3}

    # the new item is a candidate at once: its nearest neighbour has it among its own similar items
    page.get_by_test_id("similar").get_by_title(f"Show item {similar[0]}", exact=True).click()
    settle(page)
    assert page.get_by_test_id("item-id").inner_text() == similar[0]
    assert new.item_id in card_ids(page, "similar")
