"""Rolling a new bundle out replica by replica over one shared store (issue 15).

Replica 1 serves bundle A, replicas 2 and 3 serve bundle B (another model: other seed, other
vectors, another version), all over one store (the SQLite file of one data dir, or one
PostgreSQL database). Items are ingested on A before and during the roll-out and on B during
it. Every item must end up a candidate on every replica with its own bundle's vector, each
item encoded once per bundle (the log holds one entry per item and version, whichever replica
wrote it), and replica 1 restarted on B encodes nothing.
"""

import time
from contextlib import ExitStack

import numpy as np
import pytest
from bundle_factory import FactoryBundle, build_bundle, make_item
from fastapi.testclient import TestClient
from service_testing import item_body
from store_testing import Database

from service.app import create_app
from service.config import Settings

pytestmark = pytest.mark.both_stores
CONVERGE_S = 20.0


@pytest.fixture(scope="module")
def next_bundle(tmp_path_factory: pytest.TempPathFactory) -> FactoryBundle:
    """Bundle B: the same architecture retrained (another seed), as a nightly retrain gives."""
    return build_bundle(tmp_path_factory.mktemp("next") / "bundle", seed=1)


def log_entries(database: Database, item_id: str, version: str) -> int:
    return database.count("item_changes", "item_id = ? AND bundle_version = ?", item_id, version)


def vector_or_none(client: TestClient, item_id: str) -> np.ndarray | None:
    response = client.get(f"/items/{item_id}", params={"include_vector": True})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return np.array(response.json()["vector"], dtype=np.float32)


def wait_for_vectors(client: TestClient, bundle: FactoryBundle, items: dict[str, tuple[dict, bytes]]) -> None:
    """Until every item is a candidate on `client` with `bundle`'s own vector for it."""
    expected = {item_id: bundle.offline_vector(fields, image) for item_id, (fields, image) in items.items()}
    deadline = time.monotonic() + CONVERGE_S
    while True:
        got = {item_id: vector_or_none(client, item_id) for item_id in items}
        missing = [item_id for item_id, vector in got.items() if vector is None]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not missing, f"not candidates after {CONVERGE_S}s: {missing}"
    for item_id, vector in got.items():
        np.testing.assert_allclose(vector, expected[item_id], atol=1e-5, err_msg=item_id)


def test_a_bundle_rolls_out_replica_by_replica(
    factory: FactoryBundle, next_bundle: FactoryBundle, database: Database,
) -> None:
    version_a, version_b = factory.manifest.bundle_version, next_bundle.manifest.bundle_version
    assert version_a != version_b
    rng = np.random.default_rng(15)
    items: dict[str, tuple[dict, bytes]] = {}

    def replica(bundle: FactoryBundle) -> TestClient:
        settings = Settings(bundle=bundle.path, data_dir=database.data_dir, store_url=database.url)
        return TestClient(create_app(settings))

    def ingest(client: TestClient, item_id: str) -> None:
        item = make_item(rng, len(items) % 4, item_id)
        response = client.post("/items", json=item_body(item))
        assert response.status_code == 201, response.text
        items[item_id] = (item.fields, item.image)

    with ExitStack() as replicas:
        one = replicas.enter_context(replica(factory))
        for n in range(4):
            ingest(one, f"before-{n}")
        two = replicas.enter_context(replica(next_bundle))
        three = replicas.enter_context(replica(next_bundle))
        for n in range(4):  # during the roll-out: through the old replica and through the new ones
            ingest(one, f"during-a-{n}")
        ingest(two, "during-b-0")
        ingest(three, "during-b-1")

        for client in (two, three):
            wait_for_vectors(client, next_bundle, items)
        wait_for_vectors(one, factory, items)  # never a vector of B: every one is A's own
        bundle_item = factory.items[0].item_id
        np.testing.assert_allclose(vector_or_none(one, bundle_item),
                                   factory.offline_vector(factory.items[0].fields, factory.items[0].image), atol=1e-5)
        for item_id in items:
            assert log_entries(database, item_id, version_b) == 1, f"{item_id} encoded by B more than once"
            assert log_entries(database, item_id, version_a) == 1, f"{item_id} encoded by A more than once"
        logged = database.count("item_changes")

        replicas.close()  # replica 1 (and the others) go down; replica 1 comes back on B
    with replica(next_bundle) as one:
        wait_for_vectors(one, next_bundle, items)
        assert database.count("item_changes") == logged, "a restart on B re-encoded items again"


def test_rolling_back_encodes_nothing_twice(
    factory: FactoryBundle, next_bundle: FactoryBundle, database: Database,
) -> None:
    """A then B then A again (a roll-back): every replica on A finds its vectors in the log."""
    rng = np.random.default_rng(16)
    items: dict[str, tuple[dict, bytes]] = {}

    def replica(bundle: FactoryBundle) -> TestClient:
        return TestClient(create_app(Settings(bundle=bundle.path, data_dir=database.data_dir,
                                              store_url=database.url)))

    def ingest(client: TestClient, item_id: str) -> None:
        item = make_item(rng, 1, item_id)
        assert client.post("/items", json=item_body(item)).status_code == 201
        items[item_id] = (item.fields, item.image)

    with replica(factory) as old:
        ingest(old, "on-a")
    with replica(next_bundle) as new:
        ingest(new, "on-b")
        wait_for_vectors(new, next_bundle, items)
    logged = database.count("item_changes")
    with replica(factory) as old:
        wait_for_vectors(old, factory, items)
    for item_id in items:
        assert log_entries(database, item_id, factory.manifest.bundle_version) == 1
    assert database.count("item_changes") == logged + 1, "only B's new item needed an A vector"

