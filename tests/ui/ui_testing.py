"""Helpers of the page's browser tests: waiting for the page to settle and reading what it shows."""

from playwright.sync_api import Page

API_KEY = "ui-test-key"


def settle(page: Page) -> None:
    """Wait until the page has no action running (it marks the body `data-busy` meanwhile)."""
    page.wait_for_selector("body:not([data-busy])")


def card_ids(page: Page, testid: str) -> list[str]:
    """The item ids of the cards in the list `testid`, in order."""
    return page.get_by_test_id(testid).get_by_test_id("item-card").evaluate_all(
        "cards => cards.map(card => card.dataset.itemId)")


def loaded_images(page: Page, images: str) -> int:
    """How many of the images the CSS selector `images` matches loaded, once none is still loading."""
    page.wait_for_function("s => [...document.querySelectorAll(s)].every(image => image.complete)", arg=images)
    return page.eval_on_selector_all(images, "found => found.filter(image => image.naturalWidth > 0).length")
