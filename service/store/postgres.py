"""The PostgreSQL backend: one database shared by every replica, on any host.

Writes and look-ups take connections from a psycopg pool; the follower reads the logs through a
connection of its own, and a `ChangeListener` holds one more for LISTEN. The schema comes from
versioned SQL files applied at start-up (`service.store.migrate`).

Durability: every pooled connection runs with `synchronous_commit = on`, so a commit returns
once its WAL is flushed, and the API answers only after the commit.

One writer at a time, and the logs in commit order. A sequence hands out numbers when rows are
inserted, not when they commit: two concurrent writers could take 10 and 11 and commit 11
first, and a follower that had read up to 11 would never go back for 10. So every write
transaction first takes one transaction-level advisory lock (`pg_advisory_xact_lock`), which
PostgreSQL releases only after the commit is visible: write transactions run one after
another across every replica, as SQLite's BEGIN IMMEDIATE makes them run on one host; a log
entry numbered n is visible before any entry after it is even numbered, and a follower can
read `seq > cursor` without ever skipping one. Under the same lock the transaction's checks
(is the id live? was the idempotency key used?) see every earlier commit and cannot be raced,
so two replicas creating one id get one 201 and one 409; the primary keys stay the last word.
The cost is that writes do not run in parallel (each transaction holds the lock for its
statements and its commit's WAL flush); reads never wait for it.

Learning about changes: a write transaction that appends to a log NOTIFYs the store's channel
(delivered at commit), and `watch` calls back on each notification (`service.store.listener`),
so an idle replica applies another's change within milliseconds. `changed()`, which the
follower calls before every request, asks for the two logs' last sequence numbers (one indexed
query): a change acknowledged by any replica is applied before the next request any replica
answers, not only in the process that wrote it.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from typing import Any

import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Json
from psycopg_pool import ConnectionPool

from service.errors import Conflict
from service.idempotency import DEFAULT_TTL_S, IdempotentRequest, KeyReused, Reply
from service.store.base import (
    PURGE_PER_KEY,
    ItemChange,
    ItemWrite,
    StoredInteraction,
    StoredItem,
    Store,
    WriteTransaction,
    blob_vector,
    conflict,
    not_found,
    vector_blob,
)
from service.store.listener import ChangeListener
from service.store.locks import advisory_key
from service.store.migrate import migrate

CHANNEL = "cliper_store_changes"
WRITE_LOCK = advisory_key("cliper.store.write")
POOL_SIZE = 4  # writes run one at a time anyway (the write lock); the rest serve look-ups
CONNECT_TIMEOUT_S = 10
_ITEM_COLUMNS = "item_id, fields, vector, bundle_version, created_at, change_seq"


class PostgresStore(Store):
    """A PostgreSQL database (a `postgresql://` URL) shared by every process of every replica."""

    def __init__(self, url: str, idempotency_ttl_s: float = DEFAULT_TTL_S) -> None:
        self._url = url
        self._idempotency_ttl_s = idempotency_ttl_s
        try:
            self._log_reader = _connect(url, "cliper-follower")
        except psycopg.OperationalError as exc:
            raise RuntimeError(f"cannot connect to the PostgreSQL store at {describe(url)}: {exc}") from exc
        try:
            self.schema_version = migrate(self._log_reader)
            self._identity = self._log_reader.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]
        except BaseException:
            self._log_reader.close()
            raise
        self._pool = ConnectionPool(
            url, min_size=1, max_size=POOL_SIZE, open=True, name="cliper-store", configure=_configure,
            check=ConnectionPool.check_connection,  # a connection cut since (a restart, a failover) is replaced
            kwargs={"autocommit": True, "application_name": "cliper-store", "connect_timeout": CONNECT_TIMEOUT_S},
        )
        self._seen: tuple[int, int] | None = None
        self._listener: ChangeListener | None = None

    def identity(self) -> str:
        return self._identity

    @contextmanager
    def transaction(self) -> Iterator["PostgresWriteTransaction"]:
        """The write lock first (see the module's docstring), NOTIFY last if a log grew."""
        with self._pool.connection() as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            tx = PostgresWriteTransaction(db, self._idempotency_ttl_s)
            yield tx
            if tx.logged:
                db.execute("SELECT pg_notify(%s, '')", (CHANNEL,))

    def recall(self, request: IdempotentRequest) -> Reply | None:
        with self._pool.connection() as db:
            return _recall(db, request, self._idempotency_ttl_s)

    def get_item(self, item_id: str) -> StoredItem | None:
        with self._pool.connection() as db:
            row = db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE item_id = %s", (item_id,)).fetchone()
        return None if row is None else _item(row)

    def image(self, item_id: str) -> bytes | None:
        with self._pool.connection() as db:
            row = db.execute("SELECT image FROM items WHERE item_id = %s", (item_id,)).fetchone()
        return None if row is None else row[0]

    def items_to_reencode(self, bundle_version: str) -> list[StoredItem]:
        with self._pool.connection() as db:
            rows = db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE bundle_version <> %(version)s AND NOT EXISTS "
                "(SELECT 1 FROM item_changes c WHERE c.source_seq = items.change_seq "
                "AND c.bundle_version = %(version)s) ORDER BY change_seq",
                {"version": bundle_version},
            ).fetchall()
        return [_item(row) for row in rows]

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A session-level advisory lock, held by a pooled connection for the `with` body (the
        server frees it if the process dies)."""
        key = advisory_key(f"cliper.store.exclusive.{name}")
        with self._pool.connection() as db:
            db.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                db.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def changed(self) -> bool:
        last = self._read(
            "SELECT (SELECT coalesce(max(seq), 0) FROM item_changes), (SELECT coalesce(max(seq), 0) FROM interactions)"
        )[0]
        changed, self._seen = last != self._seen, last
        return changed

    def item_changes(self, after: int) -> list[ItemChange]:
        rows = self._read(
            "SELECT c.seq, c.item_id, c.vector, c.bundle_version, i.fields FROM item_changes c "
            "LEFT JOIN items i ON i.item_id = c.item_id WHERE c.seq > %s ORDER BY c.seq", (after,)
        )
        return [ItemChange(seq, item_id, None if vector is None else blob_vector(vector), version, fields or {})
                for seq, item_id, vector, version, fields in rows]

    def interactions(self, after: int) -> list[tuple[int, StoredInteraction]]:
        rows = self._read(
            "SELECT seq, user_id, item_id, vector, bundle_version FROM interactions WHERE seq > %s ORDER BY seq",
            (after,),
        )
        return [(seq, StoredInteraction(user_id, item_id, blob_vector(vector), version))
                for seq, user_id, item_id, vector, version in rows]

    def watch(self, on_change: Callable[[], None]) -> None:
        if self._listener is not None:
            raise RuntimeError("the store is already watched")
        self._listener = ChangeListener(self._url, CHANNEL, on_change)
        self._listener.start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self._pool.close()
        self._log_reader.close()

    def _read(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A query on the follower's connection; on a new connection once more if that one was
        cut (a database restart or failover: the reads are safe to repeat)."""
        try:
            return self._log_reader.execute(query, params).fetchall()
        except psycopg.OperationalError:
            if not self._log_reader.closed:
                raise
        self._log_reader = _connect(self._url, "cliper-follower")
        return self._log_reader.execute(query, params).fetchall()


class PostgresWriteTransaction(WriteTransaction):
    """The changes of one `PostgresStore.transaction`, made on its connection under the write lock."""

    def __init__(self, db: psycopg.Connection, idempotency_ttl_s: float) -> None:
        self._db = db
        self._ttl_s = idempotency_ttl_s
        self.logged = False  # whether a log grew (the commit then notifies the followers)

    def recall(self, request: IdempotentRequest) -> Reply | None:
        return _recall(self._db, request, self._ttl_s)

    def remember(self, request: IdempotentRequest, reply: Reply) -> None:
        self._db.execute(
            "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys "
            "WHERE created_at < now() - make_interval(secs => %s) ORDER BY created_at LIMIT %s)",
            (self._ttl_s, PURGE_PER_KEY),
        )
        self._db.execute(
            "INSERT INTO idempotency_keys (key, fingerprint, status, body) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, status = excluded.status, "
            "body = excluded.body, created_at = excluded.created_at",
            (request.key, request.fingerprint, reply.status, Json(reply.body)),
        )

    def put_item(self, write: ItemWrite) -> bool | Conflict:
        item = write.item
        if item.image is None:
            raise ValueError(f"item {item.item_id!r}: the image must be stored with the item")
        live = self._is_live(item.item_id, write.in_bundle)
        if live and not write.replace:
            return conflict(item.item_id)
        vector = vector_blob(item.vector)
        self._db.execute(
            """
            WITH change AS (
                INSERT INTO item_changes (item_id, vector, bundle_version) VALUES (%(id)s, %(vector)s, %(version)s)
                RETURNING seq),
            restored AS (DELETE FROM deleted_items WHERE item_id = %(id)s)
            INSERT INTO items (item_id, fields, image, vector, bundle_version, created_at, change_seq)
                SELECT %(id)s, %(fields)s, %(image)s, %(vector)s, %(version)s, %(created_at)s, seq FROM change
            ON CONFLICT (item_id) DO UPDATE SET fields = excluded.fields, image = excluded.image,
                vector = excluded.vector, bundle_version = excluded.bundle_version,
                created_at = excluded.created_at, change_seq = excluded.change_seq
            """,
            {"id": item.item_id, "vector": vector, "version": item.bundle_version, "fields": Json(item.fields),
             "image": item.image, "created_at": item.created_at},
        )
        self.logged = True
        return live

    def delete_item(self, item_id: str, in_bundle: bool) -> None:
        if not self._is_live(item_id, in_bundle):
            raise not_found(item_id)
        self._db.execute(
            """
            WITH change AS (INSERT INTO item_changes (item_id) VALUES (%(id)s)),
            gone AS (DELETE FROM items WHERE item_id = %(id)s)
            INSERT INTO deleted_items (item_id) VALUES (%(id)s)
            ON CONFLICT (item_id) DO UPDATE SET deleted_at = excluded.deleted_at
            """,
            {"id": item_id},
        )
        self.logged = True

    def add_reencoded(self, item: StoredItem, vector: np.ndarray, bundle_version: str) -> bool:
        cursor = self._db.execute(
            "INSERT INTO item_changes (item_id, vector, bundle_version, source_seq) "
            "SELECT item_id, %(vector)s, %(version)s, change_seq FROM items WHERE item_id = %(id)s "
            "AND change_seq = %(seq)s ON CONFLICT (source_seq, bundle_version) WHERE source_seq IS NOT NULL DO NOTHING",
            {"vector": vector_blob(vector), "version": bundle_version, "id": item.item_id, "seq": item.change_seq},
        )
        written = cursor.rowcount == 1
        self.logged = self.logged or written
        return written

    def add_interactions(self, rows: Sequence[StoredInteraction]) -> None:
        with self._db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO interactions (user_id, item_id, vector, bundle_version) VALUES (%s, %s, %s, %s)",
                [(r.user_id, r.item_id, vector_blob(r.vector), r.bundle_version) for r in rows],
            )
        self.logged = self.logged or bool(rows)

    def interaction_count(self, user_id: str) -> int:
        return self._db.execute("SELECT count(*) FROM interactions WHERE user_id = %s", (user_id,)).fetchone()[0]

    def _is_live(self, item_id: str, in_bundle: bool) -> bool:
        ingested, withdrawn = self._db.execute(
            "SELECT EXISTS (SELECT 1 FROM items WHERE item_id = %(id)s), "
            "EXISTS (SELECT 1 FROM deleted_items WHERE item_id = %(id)s)",
            {"id": item_id},
        ).fetchone()
        return ingested or (in_bundle and not withdrawn)


def describe(url: str) -> str:
    """Where a connection string points, without its password."""
    parts = conninfo_to_dict(url)
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def _connect(url: str, application_name: str) -> psycopg.Connection:
    db = psycopg.connect(url, autocommit=True, application_name=application_name, connect_timeout=CONNECT_TIMEOUT_S)
    _configure(db)
    return db


def _configure(db: psycopg.Connection) -> None:
    """A commit returns once its WAL is flushed, whatever the server's default."""
    db.execute("SET synchronous_commit TO on")


def _recall(db: psycopg.Connection, request: IdempotentRequest, ttl_s: float) -> Reply | None:
    row = db.execute(
        "SELECT fingerprint, status, body FROM idempotency_keys "
        "WHERE key = %s AND created_at >= now() - make_interval(secs => %s)",
        (request.key, ttl_s),
    ).fetchone()
    if row is None:
        return None
    fingerprint, status, body = row
    if fingerprint != request.fingerprint:
        raise KeyReused(request.key)
    return Reply(status, body, replayed=True)


def _item(row: tuple[Any, ...]) -> StoredItem:
    item_id, fields, vector, bundle_version, created_at, change_seq = row
    return StoredItem(item_id, fields, blob_vector(vector).copy(), bundle_version, created_at.astimezone(UTC),
                      change_seq=change_seq)
