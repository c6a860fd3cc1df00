"""What only the PostgreSQL store does: migrations at start-up, NOTIFY to idle replicas with a
polling fallback, a clear refusal of a bad or silent URL. Two apps over one database stand for
two replicas; the PostgreSQL is the real one at 127.0.0.1:5432 (these tests fail without it)."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psycopg
import pytest
from bundle_factory import prototype_item
from fastapi.testclient import TestClient
from pydantic import ValidationError
from service_testing import item_body
from store_testing import Database

from service.config import Settings
from service.store import WriteTransaction, open_store, postgres
from service.store.listener import POLL_S
from service.store.migrate import migrations


@pytest.fixture
def store_backend() -> str:
    return "postgresql"


def applied_within(client: TestClient, item_id: str, limit_s: float) -> float | None:
    """Seconds until `item_id` is in the app's index (no request made to it), None past the limit."""
    index = client.app.state.services.items.index
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        if index.row_of(item_id) is not None:
            return time.perf_counter() - started
        time.sleep(0.0002)
    return None


def test_replicas_starting_together_apply_each_migration_once(database: Database) -> None:
    stores, errors = [], []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            stores.append(database.open())
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({store.identity() for store in stores}) == 1
    expected = [(migration.version, migration.name) for migration in migrations()]
    assert database.query("SELECT version, name FROM schema_version ORDER BY version") == expected
    assert expected[0] == (1, "0001_initial.sql")
    database.open()  # a restart finds nothing to do
    assert database.count("schema_version") == len(expected)


def test_an_idle_replica_applies_a_change_within_100_ms(make_client, monkeypatch: pytest.MonkeyPatch) -> None:
    """200 items ingested one by one through one replica; the other gets no request, only the
    NOTIFY. Lag: from the writer's commit to the item's put into the idle replica's index."""
    committed: list[float] = []
    applied: dict[str, float] = {}
    with make_client() as writer, make_client() as idle:
        store = writer.app.state.services.store
        transaction = store.transaction

        @contextmanager
        def timed_transaction() -> Iterator[WriteTransaction]:
            with transaction() as tx:
                yield tx
            committed.append(time.perf_counter())

        index = idle.app.state.services.items.index
        put = index.put
        monkeypatch.setattr(store, "transaction", timed_transaction)
        monkeypatch.setattr(index, "put", lambda item_id, vector: (applied.setdefault(item_id, time.perf_counter()),
                                                                   put(item_id, vector))[1])
        lags, after_ack = [], []
        for n in range(200):
            response = writer.post("/items", json=item_body(prototype_item(n % 4, f"lag-{n}")))
            acknowledged = time.perf_counter()
            assert response.status_code == 201, response.text
            assert applied_within(idle, f"lag-{n}", limit_s=2.0) is not None, f"lag-{n} never reached the idle replica"
            lags.append(applied[f"lag-{n}"] - committed[n])
            after_ack.append(max(0.0, applied[f"lag-{n}"] - acknowledged))
    p50, p99 = np.percentile(lags, [50, 99]) * 1000
    print(f"\ncommit -> in the idle replica's index: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
          f"max {max(lags) * 1000:.2f} ms; "
          f"after the client's 201: p50 {np.percentile(after_ack, 50) * 1000:.2f} ms, "
          f"p99 {np.percentile(after_ack, 99) * 1000:.2f} ms ({len(lags)} items)")
    assert p99 < 100


def test_lost_notifications_are_made_up_by_polling(make_client, monkeypatch: pytest.MonkeyPatch) -> None:
    with make_client() as writer, make_client() as idle:
        monkeypatch.setattr(postgres, "CHANNEL", "nobody_listens_here")  # the writer's NOTIFY goes astray
        assert writer.post("/items", json=item_body(prototype_item(0, "unannounced"))).status_code == 201
        lag = applied_within(idle, "unannounced", limit_s=3 * POLL_S)
        assert lag is not None and lag > 0.01, lag  # not by a notification, but within a poll or two


def test_a_listener_whose_connection_dies_reconnects(make_client, database: Database) -> None:
    with make_client() as writer, make_client() as idle:
        killed = database.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND application_name = 'cliper-listener'")
        assert len(killed) == 2  # one per replica
        assert writer.post("/items", json=item_body(prototype_item(1, "after-the-cut"))).status_code == 201
        assert applied_within(idle, "after-the-cut", limit_s=3.0) is not None
        listening = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() " \
                    "AND application_name = 'cliper-listener'"
        deadline = time.monotonic() + 3
        while database.query(listening)[0][0] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert database.query(listening)[0][0] == 2
        assert writer.post("/items", json=item_body(prototype_item(2, "notified-again"))).status_code == 201
        assert applied_within(idle, "notified-again", limit_s=0.5) is not None


def test_commits_wait_for_the_wal_flush_whatever_the_server_default(database: Database) -> None:
    name = database.url.rsplit("/", 1)[1]
    database.query(f"ALTER DATABASE {name} SET synchronous_commit = off")
    store = database.open()
    with store._pool.connection() as db:  # a connection that writes go through (no public handle)
        assert db.execute("SHOW synchronous_commit").fetchone()[0] == "on"


@pytest.mark.parametrize(("url", "says"), [
    ("mysql://user@db/shop", "must be a PostgreSQL URL, postgresql://user:password@host:5432/dbname"),
    ("sqlite:///tmp/x.db", "leave it unset for SQLite in the data dir"),
    ("postgresql://h/db?nonsense=1", 'not a valid PostgreSQL URL: invalid URI query parameter: "nonsense"'),
])
def test_a_store_url_that_is_not_postgresql_is_refused(url: str, says: str) -> None:
    with pytest.raises(ValidationError, match="store_url") as refused:
        Settings(bundle="bundle", store_url=url)
    assert says in str(refused.value)


def test_an_unreachable_database_stops_start_up_without_showing_the_password(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"cannot connect to the PostgreSQL store at 127\.0\.0\.1:1/shop: ") as refused:
        open_store("postgresql://shop:s3cret@127.0.0.1:1/shop", tmp_path)
    assert "s3cret" not in str(refused.value)
    assert isinstance(refused.value.__cause__, psycopg.OperationalError)


def test_a_replica_survives_its_connections_being_cut(client: TestClient, database: Database) -> None:
    """A database restart or failover cuts every connection: the next requests must not fail."""
    assert client.post("/items", json=item_body(prototype_item(0, "before-the-cut"))).status_code == 201
    cut = database.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    assert len(cut) >= 3  # the follower's, the pool's, the listener's
    assert client.get("/users/user-000/recommendations").status_code == 200
    assert client.get("/items/before-the-cut").status_code == 200
    assert client.post("/items", json=item_body(prototype_item(1, "after-the-cut"))).status_code == 201
    assert client.delete("/items/before-the-cut").status_code == 200
