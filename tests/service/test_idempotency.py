"""Idempotency-Key across a crash and across worker processes, and the purge of expired keys.

"Committed but not acknowledged" is a write whose transaction committed while its response never
reached the client (the process was killed, the connection dropped): here the write is made
through the service's own write path and its reply dropped, then the service restarts and the
client retries over HTTP.
"""

import threading
import time

import pytest
from bundle_factory import FactoryBundle, prototype_item
from service_testing import item_body
from store_testing import Database

from service.idempotency import IdempotentRequest, Reply, fingerprint

pytestmark = pytest.mark.both_stores


def test_a_committed_but_unacknowledged_write_is_replayed_after_a_restart(make_client, factory: FactoryBundle,
                                                                         database: Database) -> None:
    item = factory.items[3].item_id
    body = {"item_ids": [item]}
    with make_client() as client:
        services = client.app.state.services
        once = IdempotentRequest("lost-answer", fingerprint("POST", "/users/crasher/interactions", body))
        lost = client.portal.call(services.interactions.record, "crasher", [item], once)  # never sent
    with make_client() as client:  # the restarted service
        retried = client.post("/users/crasher/interactions", json=body, headers={"Idempotency-Key": "lost-answer"})
        assert retried.status_code == lost.status == 201
        assert retried.json() == lost.body and retried.headers["idempotent-replayed"] == "true"
        assert retried.json()["interactions_since_bundle"] == 1
    assert database.count("interactions") == 1


def test_a_key_holds_across_workers(make_client, factory: FactoryBundle, database: Database) -> None:
    body = {"item_ids": [factory.items[0].item_id, factory.items[1].item_id]}
    with make_client() as first, make_client() as second:  # two workers over one data dir
        answer = first.post("/users/shared/interactions", json=body, headers={"Idempotency-Key": "w-1"})
        retried = second.post("/users/shared/interactions", json=body, headers={"Idempotency-Key": "w-1"})
        assert retried.status_code == 201 and retried.json() == answer.json()

        barrier = threading.Barrier(2)  # the same create sent to both workers at once

        def create(client) -> int:
            barrier.wait()
            return client.post("/items", json=item_body(prototype_item(1, "raced")),
                               headers={"Idempotency-Key": "race"}).status_code

        outcomes: list[int] = []
        threads = [threading.Thread(target=lambda c=c: outcomes.append(create(c))) for c in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) in ([201, 201], [201, 409]), outcomes  # 409 only while the first is in flight
    assert database.count("interactions") == 2
    assert database.count("item_changes", "item_id = 'raced'") == 1


def test_expired_keys_are_purged_a_few_per_new_key(database: Database) -> None:
    store = database.open(idempotency_ttl_s=0.3)
    reply = Reply(201, {"ok": True})

    def remember(key: str) -> None:
        with store.transaction() as tx:
            tx.once(IdempotentRequest(key, "f"), lambda: reply)

    for key in ("a", "b", "c", "d", "e"):
        remember(key)
    assert store.recall(IdempotentRequest("a", "f")) == Reply(201, {"ok": True}, replayed=True)
    time.sleep(0.4)
    assert store.recall(IdempotentRequest("a", "f")) is None  # expired: forgotten, even before a purge
    remember("f")
    assert database.count("idempotency_keys") == 4  # each new key purges at most 2 expired ones
    remember("g")
    remember("h")
    assert database.count("idempotency_keys") == 3  # f, g and h


def test_a_refused_write_keeps_its_key_free(client, factory: FactoryBundle) -> None:
    """Only a write that happened is remembered: a 4xx stores nothing, so the key can be retried."""
    taken = factory.items[0].item_id
    key = {"Idempotency-Key": "after-the-conflict"}
    body = item_body(prototype_item(0, taken))
    assert client.post("/items", json=body, headers=key).status_code == 409  # a bundle item
    assert client.delete(f"/items/{taken}").status_code == 200
    assert client.post("/items", json=body, headers=key).status_code == 201
