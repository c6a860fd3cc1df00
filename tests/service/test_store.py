"""What every store backend guarantees, checked on SQLite and on PostgreSQL with several stores
over one database (the processes of one host, or replicas on several)."""

import random
import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from store_testing import Database

from service.store import ItemWrite, Store, StoredInteraction, StoredItem

pytestmark = pytest.mark.both_stores


def item(item_id: str, version: str = "v1") -> StoredItem:
    return StoredItem(item_id, {"title": item_id}, np.ones(4, dtype=np.float32), version, datetime.now(UTC), b"img")


def interaction(user_id: str) -> StoredInteraction:
    return StoredInteraction(user_id, "some-item", np.ones(4, dtype=np.float32), "v1")


def test_a_follower_never_skips_an_entry_that_commits_late(database: Database) -> None:
    """Writers on two stores hold their transactions open a little after taking their sequence
    numbers, while a follower reads `seq > cursor` as fast as it can: every entry it ever reads
    must come in order, and at the end it must have read the whole log (a number taken earlier
    but committed later would be skipped)."""
    writers: list[Store] = [database.open(), database.open()]
    reader = database.open()
    stop = threading.Event()
    read_items: list[int] = []
    read_interactions: list[int] = []

    def write(store: Store, name: str) -> None:
        rng = random.Random(name)
        for n in range(40):
            with store.transaction() as tx:
                if n % 2:
                    tx.put_item(ItemWrite(item(f"{name}-{n}"), in_bundle=False, replace=False))
                else:
                    tx.add_interactions([interaction(name)])
                time.sleep(rng.uniform(0, 0.003))  # the number is taken; the commit comes later

    def follow() -> None:
        while not stop.is_set():
            read_items.extend(change.seq for change in reader.item_changes(after=max(read_items, default=0)))
            read_interactions.extend(seq for seq, _ in reader.interactions(after=max(read_interactions, default=0)))

    follower = threading.Thread(target=follow)
    follower.start()
    threads = [threading.Thread(target=write, args=(store, f"w{i}-{j}"))
               for i, store in enumerate(writers) for j in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    follower.join()
    read_items.extend(change.seq for change in reader.item_changes(after=max(read_items, default=0)))
    read_interactions.extend(seq for seq, _ in reader.interactions(after=max(read_interactions, default=0)))
    assert read_items == [change.seq for change in reader.item_changes(after=0)]
    assert read_interactions == [seq for seq, _ in reader.interactions(after=0)]
    assert (len(read_items), len(read_interactions)) == (80, 80)


def test_changed_tells_of_every_commit_to_the_logs(database: Database) -> None:
    """Read-your-writes: after a write through this store or another, the next `changed()` is True."""
    store, other = database.open(), database.open()
    assert store.changed() is True  # the first look
    assert store.changed() is False
    store.put_item(item("mine"), in_bundle=False, replace=False)
    assert store.changed() is True
    assert store.changed() is False
    other.add_interactions([interaction("someone")])
    assert store.changed() is True
    assert [change.item_id for change in store.item_changes(after=0)] == ["mine"]
    assert [row.user_id for _, row in store.interactions(after=0)] == ["someone"]


def test_exclusive_is_held_against_other_stores(database: Database) -> None:
    first, second = database.open(), database.open()
    events: list[str] = []
    entered = threading.Event()

    def contend() -> None:
        entered.wait()
        with second.exclusive("reencode"):
            events.append("second in")

    contender = threading.Thread(target=contend)
    contender.start()
    with first.exclusive("reencode"):
        entered.set()
        time.sleep(0.3)
        events.append("first out")
    contender.join()
    assert events == ["first out", "second in"]
    with first.exclusive("reencode"), second.exclusive("another-name"):
        pass  # other names do not wait


def test_items_from_other_bundles_come_oldest_write_first(database: Database) -> None:
    store = database.open()
    for item_id in ("a", "b", "c"):
        store.put_item(item(item_id, "old"), in_bundle=False, replace=False)
    store.put_item(item("a", "old"), in_bundle=False, replace=True)  # a was written last
    store.put_item(item("b", "new"), in_bundle=False, replace=True)  # b is current
    stale = store.items_from_other_bundles("new")
    assert [(stale_item.item_id, stale_item.image) for stale_item in stale] == [("c", None), ("a", None)]
    assert store.image("c") == b"img"
    assert stale[0].fields == {"title": "c"} and stale[0].created_at.tzinfo is not None


def test_a_transaction_that_raises_leaves_nothing(database: Database) -> None:
    store = database.open()
    with pytest.raises(RuntimeError, match="changed my mind"), store.transaction() as tx:
        tx.put_item(ItemWrite(item("half-written"), in_bundle=False, replace=False))
        tx.add_interactions([interaction("u")])
        raise RuntimeError("changed my mind")
    assert store.get_item("half-written") is None
    assert store.item_changes(after=0) == [] and store.interactions(after=0) == []
