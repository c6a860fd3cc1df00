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


def test_items_to_reencode_come_oldest_write_first(database: Database) -> None:
    store = database.open()
    for item_id in ("a", "b", "c"):
        store.put_item(item(item_id, "old"), in_bundle=False, replace=False)
    store.put_item(item("a", "old"), in_bundle=False, replace=True)  # a was written last
    store.put_item(item("b", "new"), in_bundle=False, replace=True)  # b is current
    stale = store.items_to_reencode("new")
    assert [(stale_item.item_id, stale_item.image) for stale_item in stale] == [("c", None), ("a", None)]
    assert store.image("c") == b"img" and store.image("never-stored") is None
    assert stale[0].fields == {"title": "c"} and stale[0].created_at.tzinfo is not None


def test_a_write_is_re_encoded_once_per_version_and_only_while_current(database: Database) -> None:
    store, other = database.open(), database.open()  # two replicas
    for item_id in ("kept", "replaced", "withdrawn"):
        store.put_item(item(item_id, "A"), in_bundle=False, replace=False)
    listed = {stale.item_id: stale for stale in store.items_to_reencode("B")}
    store.put_item(item("replaced", "A"), in_bundle=False, replace=True)  # new content meanwhile
    store.delete_item("withdrawn", in_bundle=False)
    vector_b = np.full(4, 7, dtype=np.float32)
    with store.transaction() as tx:
        assert [tx.add_reencoded(listed[i], vector_b, "B") for i in ("kept", "replaced", "withdrawn")] == [
            True, False, False]
    with other.transaction() as tx:
        assert not tx.add_reencoded(listed["kept"], vector_b, "B"), "a second B vector of one write"
        assert tx.add_reencoded(listed["kept"], vector_b, "C"), "another version has its own"
    assert [stale.item_id for stale in store.items_to_reencode("B")] == ["replaced"]
    reencoded = [change for change in other.item_changes(after=0) if change.bundle_version == "B"]
    assert [change.item_id for change in reencoded] == ["kept"]
    np.testing.assert_array_equal(reencoded[0].vector, vector_b)
    assert store.get_item("kept").bundle_version == "A", "the row keeps the vector it was written with"


def test_a_transaction_that_raises_leaves_nothing(database: Database) -> None:
    store = database.open()
    with pytest.raises(RuntimeError, match="changed my mind"), store.transaction() as tx:
        tx.put_item(ItemWrite(item("half-written"), in_bundle=False, replace=False))
        tx.add_interactions([interaction("u")])
        raise RuntimeError("changed my mind")
    assert store.get_item("half-written") is None
    assert store.item_changes(after=0) == [] and store.interactions(after=0) == []
