"""Several worker processes over one data dir stay in step through the store's logs.

Two apps in one test process over the same store behave like two workers (SQLite) or two
replicas (PostgreSQL): each has its own index and users, and sees the other's writes on its next
request. Every test that uses a store runs on both backends.
"""

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import FactoryBundle, prototype_item
from service_testing import item_body
from store_testing import Database

from service.errors import Conflict
from service.follower import StoreFollower
from service.store import ItemWrite, SqliteStore, Store, StoredItem

pytestmark = pytest.mark.both_stores


def top_ids(client, user: str, k: int = 5) -> list[str]:
    return [entry["item_id"] for entry in client.get(f"/users/{user}/recommendations", params={"k": k}).json()["items"]]


def test_a_write_to_one_worker_is_seen_by_the_other(make_client, factory: FactoryBundle) -> None:
    bundle_item = factory.items[0].item_id
    with make_client() as first, make_client() as second:
        assert "shared-mug" not in top_ids(second, "user-000")
        assert first.post("/items", json=item_body(prototype_item(0, "shared-mug"))).status_code == 201
        assert top_ids(second, "user-000")[0] == "shared-mug"  # user-000 likes cluster 0, its prototype
        assert second.get("/items/shared-mug").json()["source"] == "ingested"
        again = second.post("/items", json=item_body(prototype_item(0, "shared-mug")))
        assert again.status_code == 409, again.text

        assert second.delete("/items/shared-mug").status_code == 200
        assert first.get("/items/shared-mug").status_code == 404
        assert "shared-mug" not in top_ids(first, "user-000", k=20)

        first_view = top_ids(first, "user-000", k=20)
        recorded = second.post("/users/user-000/interactions", json={"item_ids": first_view[:2]}).json()
        assert recorded["interactions_since_bundle"] == 2
        assert not set(first_view[:2]) & set(top_ids(first, "user-000", k=20))
        more = first.post("/users/user-000/interactions", json={"item_ids": [bundle_item]}).json()
        assert more["interactions_since_bundle"] == 3
        assert top_ids(first, "user-000", k=20) == top_ids(second, "user-000", k=20)


def test_every_request_catches_up_once(client, monkeypatch: pytest.MonkeyPatch) -> None:
    """One request-scoped step applies what other workers wrote, whatever the endpoint (the
    catch-ups a PostgreSQL notification starts, between requests, are not counted)."""
    calls: list[str] = []
    catch_up = StoreFollower.catch_up
    monkeypatch.setattr(StoreFollower, "catch_up", lambda self: (calls.append("catch_up"), catch_up(self))[1])
    monkeypatch.setattr(StoreFollower, "_catch_up_in_background", catch_up)
    requests = {
        "POST /items": lambda: client.post("/items", json=item_body(prototype_item(0, "once"))),
        "GET /items/once": lambda: client.get("/items/once"),
        "GET recommendations": lambda: client.get("/users/user-000/recommendations"),
        "POST interactions": lambda: client.post("/users/user-000/interactions", json={"item_ids": ["once"]}),
        "DELETE /items/once": lambda: client.delete("/items/once"),
    }
    for name, send in requests.items():
        calls.clear()
        response = send()
        assert response.status_code < 300, (name, response.text)
        assert len(calls) == 1, f"{name} caught up {len(calls)} times"


def test_two_stores_cannot_both_create_one_item(database: Database) -> None:
    stores = [database.open(), database.open()]
    item = StoredItem("contested", {"title": "a"}, np.ones(4, dtype=np.float32), "v1", datetime.now(UTC), b"img")
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def create(store: Store) -> None:
        barrier.wait()
        try:
            store.put_item(item, in_bundle=False, replace=False)
            outcomes.append("created")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=create, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict", "created"]
    assert [change.item_id for change in stores[0].item_changes(after=0)] == ["contested"]


def test_items_written_together_get_one_outcome_each(database: Database) -> None:
    store = database.open()

    def write(item_id: str, replace: bool = False, in_bundle: bool = False) -> ItemWrite:
        item = StoredItem(item_id, {"title": item_id}, np.ones(4, dtype=np.float32), "v1", datetime.now(UTC), b"img")
        return ItemWrite(item, in_bundle, replace)

    outcomes = store.put_items([write("a"), write("a"), write("a", replace=True), write("bundle-item", in_bundle=True)])
    assert outcomes[0] is False and outcomes[2] is True
    assert isinstance(outcomes[1], Conflict) and "'a' already exists" in outcomes[1].message
    assert isinstance(outcomes[3], Conflict), "a live bundle item needs replace=true"
    assert [change.item_id for change in store.item_changes(after=0)] == ["a", "a"]

    with pytest.raises(ValueError, match="'b': the image must be stored"):
        store.put_items([write("c"), ItemWrite(StoredItem("b", {}, np.ones(4, dtype=np.float32), "v1",
                                                          datetime.now(UTC)), False, False)])
    assert store.get_item("c") is None, "a refused batch writes nothing"


def test_a_schema_1_store_is_migrated_with_its_log_rebuilt(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "service.sqlite3") as db:
        db.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE items (item_id TEXT PRIMARY KEY, fields TEXT NOT NULL, image BLOB NOT NULL,
                vector BLOB NOT NULL, bundle_version TEXT NOT NULL, created_at TEXT NOT NULL);
            CREATE TABLE deleted_items (item_id TEXT PRIMARY KEY, deleted_at TEXT NOT NULL);
            CREATE TABLE interactions (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
                item_id TEXT NOT NULL, vector BLOB NOT NULL, bundle_version TEXT NOT NULL, created_at TEXT NOT NULL);
        """)
        db.execute("INSERT INTO items VALUES ('kept', '{}', x'00', ?, 'v1', '2026-01-01T00:00:00+00:00')",
                   (np.full(4, 2, dtype=np.float32).tobytes(),))
        db.execute("INSERT INTO deleted_items VALUES ('gone', '2026-01-01T00:00:00+00:00')")
    store = SqliteStore(tmp_path)
    changes = store.item_changes(after=0)
    assert [(change.item_id, change.vector is None) for change in changes] == [("gone", True), ("kept", False)]
    np.testing.assert_array_equal(changes[1].vector, np.full(4, 2, dtype=np.float32))
    # schema 3: the item knows its write in the log, so another bundle version can re-encode it once
    [stale] = store.items_to_reencode("v2")
    assert stale.change_seq == changes[1].seq
    with store.transaction() as tx:
        assert tx.add_reencoded(stale, np.zeros(4, dtype=np.float32), "v2")
    assert store.items_to_reencode("v2") == []


def test_the_store_keeps_the_identity_it_was_created_with(database: Database, make_database) -> None:
    first = database.open()
    identity = first.identity()
    first.close()
    assert database.open().identity() == identity  # reopened (a restart, another worker or replica)
    assert make_database().open().identity() != identity  # another (or a wiped) database


def test_a_newer_schema_is_refused(database: Database) -> None:
    database.open().close()
    if database.backend == "sqlite":
        database.query("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    else:  # a newer release applied its migration 99
        database.query("INSERT INTO schema_version (version, name) VALUES (99, '0099_future.sql')")
    with pytest.raises(RuntimeError, match="schema version 99"):
        database.open()
