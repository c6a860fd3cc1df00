"""The SQLite backend: one file in the data dir, shared by the worker processes of one host.

WAL journal with `synchronous=FULL`: a write returns only once it is on disk, and the API
answers only after the write returns, so an acknowledged change survives a crash. Items
ingested together are written in one transaction (one disk sync for all). A write transaction
starts with BEGIN IMMEDIATE, which takes SQLite's one write lock: its conflict checks cannot be
raced, and the logs' sequence numbers (AUTOINCREMENT) are handed out in commit order. A second
connection reads the logs; SQLite's `data_version` on it tells cheaply whether any connection
has committed since it last looked (one `PRAGMA` per request). Item images are kept so items
can be re-encoded when a new bundle (another model) is deployed over the same data dir; a
re-encoding is one more log entry (`add_reencoded`), the item's row keeps its first vector.
"""

import fcntl
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

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

SCHEMA_VERSION = 3
_ITEM_COLUMNS = "item_id, fields, vector, bundle_version, created_at, change_seq"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY, fields TEXT NOT NULL, image BLOB NOT NULL, vector BLOB NOT NULL,
    bundle_version TEXT NOT NULL, created_at TEXT NOT NULL, change_seq INTEGER);
CREATE TABLE IF NOT EXISTS deleted_items (item_id TEXT PRIMARY KEY, deleted_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS interactions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, item_id TEXT NOT NULL,
    vector BLOB NOT NULL, bundle_version TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS item_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL, vector BLOB, bundle_version TEXT,
    created_at TEXT NOT NULL, source_seq INTEGER);
CREATE INDEX IF NOT EXISTS interactions_by_user ON interactions (user_id);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at)
"""
# schema 1 had no item_changes log: it is rebuilt from the live tables (deletions, then items)
_MIGRATE_FROM_1 = """
INSERT INTO item_changes (item_id, vector, bundle_version, created_at)
    SELECT item_id, NULL, NULL, deleted_at FROM deleted_items;
INSERT INTO item_changes (item_id, vector, bundle_version, created_at)
    SELECT item_id, vector, bundle_version, created_at FROM items ORDER BY rowid
"""
# schema 3 (rolling bundle upgrades): items.change_seq, the log entry of an item's last write, and
# item_changes.source_seq, the write a re-encoding (under another bundle version) encoded
_ADDED_COLUMNS = (("items", "change_seq INTEGER"), ("item_changes", "source_seq INTEGER"))
_MIGRATE_FROM_2 = """
UPDATE items SET change_seq = (SELECT max(seq) FROM item_changes c WHERE c.item_id = items.item_id)
"""
_REENCODED_INDEX = """
CREATE UNIQUE INDEX IF NOT EXISTS item_changes_reencoded ON item_changes (source_seq, bundle_version)
    WHERE source_seq IS NOT NULL
"""


class SqliteStore(Store):
    """The SQLite file `DATA_DIR/service.sqlite3`, shared by every worker process.

    Writes and look-ups go through one connection, safe from several threads. The logs are
    read through a second connection by one thread at a time (the follower).
    """

    def __init__(self, data_dir: Path, idempotency_ttl_s: float = DEFAULT_TTL_S) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "service.sqlite3"
        self._idempotency_ttl_s = idempotency_ttl_s
        self._lock = threading.Lock()
        self._db = _connect(self.path)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            found = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            for statement in _statements(_SCHEMA):
                self._db.execute(statement)
            if found is not None and int(found[0]) > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: schema version {found[0]}, this service uses {SCHEMA_VERSION}")
            if found is not None and int(found[0]) == 1:
                for statement in _statements(_MIGRATE_FROM_1):
                    self._db.execute(statement)
            if found is not None and int(found[0]) < 3:
                for table, column in _ADDED_COLUMNS:
                    _add_column(self._db, table, column)
                self._db.execute(_MIGRATE_FROM_2)
            self._db.execute(_REENCODED_INDEX)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (uuid.uuid4().hex,))
            self._identity = self._db.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]
        self._log_reader = _connect(self.path)
        self._seen_data_version: int | None = None

    def identity(self) -> str:
        return self._identity

    @contextmanager
    def transaction(self) -> Iterator["SqliteWriteTransaction"]:
        """BEGIN IMMEDIATE takes SQLite's write lock first, so checks made inside the
        transaction cannot be raced by another process."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            yield SqliteWriteTransaction(self._db, self._idempotency_ttl_s)

    def recall(self, request: IdempotentRequest) -> Reply | None:
        with self._lock:
            return _recall(self._db, request, self._idempotency_ttl_s)

    def get_item(self, item_id: str) -> StoredItem | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE item_id = ?", (item_id,)).fetchone()
        return None if row is None else _item(row)

    def image(self, item_id: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT image FROM items WHERE item_id = ?", (item_id,)).fetchone()
        return None if row is None else row[0]

    def items_to_reencode(self, bundle_version: str) -> list[StoredItem]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE bundle_version != :version AND NOT EXISTS "
                "(SELECT 1 FROM item_changes c WHERE c.source_seq = items.change_seq AND c.bundle_version = :version) "
                "ORDER BY change_seq",
                {"version": bundle_version},
            )
            return [_item(row) for row in rows]

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A lock file in the data dir, held across processes for the `with` body."""
        with (self.path.parent / f".{name}.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def changed(self) -> bool:
        version = self._log_reader.execute("PRAGMA data_version").fetchone()[0]
        changed, self._seen_data_version = version != self._seen_data_version, version
        return changed

    def item_changes(self, after: int) -> list[ItemChange]:
        rows = self._log_reader.execute(
            "SELECT c.seq, c.item_id, c.vector, c.bundle_version, i.fields FROM item_changes c "
            "LEFT JOIN items i ON i.item_id = c.item_id WHERE c.seq > ? ORDER BY c.seq", (after,)
        )
        return [ItemChange(seq, item_id, None if vector is None else blob_vector(vector), version,
                           json.loads(fields) if fields else {})
                for seq, item_id, vector, version, fields in rows]

    def interactions(self, after: int) -> list[tuple[int, StoredInteraction]]:
        rows = self._log_reader.execute(
            "SELECT seq, user_id, item_id, vector, bundle_version FROM interactions WHERE seq > ? ORDER BY seq",
            (after,),
        )
        return [(seq, StoredInteraction(user_id, item_id, blob_vector(vector), version))
                for seq, user_id, item_id, vector, version in rows]

    def watch(self, on_change: Callable[[], None]) -> None:
        """Nothing to watch: SQLite cannot tell other processes of a commit; the workers of a
        host check `data_version` before each request instead."""

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._log_reader.close()


class SqliteWriteTransaction(WriteTransaction):
    """The changes of one `SqliteStore.transaction`, made on its connection."""

    def __init__(self, db: sqlite3.Connection, idempotency_ttl_s: float) -> None:
        self._db = db
        self._ttl_s = idempotency_ttl_s

    def recall(self, request: IdempotentRequest) -> Reply | None:
        return _recall(self._db, request, self._ttl_s)

    def remember(self, request: IdempotentRequest, reply: Reply) -> None:
        now = time.time()
        self._db.execute(
            "DELETE FROM idempotency_keys WHERE key IN "
            "(SELECT key FROM idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?)",
            (now - self._ttl_s, PURGE_PER_KEY),
        )
        self._db.execute("INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?, ?, ?)",
                         (request.key, request.fingerprint, reply.status, json.dumps(reply.body), now))

    def put_item(self, write: ItemWrite) -> bool | Conflict:
        item = write.item
        if item.image is None:
            raise ValueError(f"item {item.item_id!r}: the image must be stored with the item")
        live = self._is_live(item.item_id, write.in_bundle)
        if live and not write.replace:
            return conflict(item.item_id)
        db = self._db
        seq = db.execute("INSERT INTO item_changes (item_id, vector, bundle_version, created_at) VALUES (?, ?, ?, ?)",
                         (item.item_id, vector_blob(item.vector), item.bundle_version, _now())).lastrowid
        db.execute("DELETE FROM items WHERE item_id = ?", (item.item_id,))
        db.execute(
            "INSERT INTO items (item_id, fields, image, vector, bundle_version, created_at, change_seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (item.item_id, json.dumps(item.fields), item.image, vector_blob(item.vector), item.bundle_version,
             item.created_at.isoformat(), seq),
        )
        db.execute("DELETE FROM deleted_items WHERE item_id = ?", (item.item_id,))
        return live

    def add_reencoded(self, item: StoredItem, vector: np.ndarray, bundle_version: str) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO item_changes (item_id, vector, bundle_version, created_at, source_seq) "
            "SELECT item_id, ?, ?, ?, change_seq FROM items WHERE item_id = ? AND change_seq = ?",
            (vector_blob(vector), bundle_version, _now(), item.item_id, item.change_seq),
        )
        return cursor.rowcount == 1

    def delete_item(self, item_id: str, in_bundle: bool) -> None:
        if not self._is_live(item_id, in_bundle):
            raise not_found(item_id)
        self._db.execute("DELETE FROM items WHERE item_id = ?", (item_id,))
        self._db.execute("INSERT OR REPLACE INTO deleted_items VALUES (?, ?)", (item_id, _now()))
        self._db.execute("INSERT INTO item_changes (item_id, vector, bundle_version, created_at) "
                         "VALUES (?, NULL, NULL, ?)", (item_id, _now()))

    def add_interactions(self, rows: Sequence[StoredInteraction]) -> None:
        self._db.executemany(
            "INSERT INTO interactions (user_id, item_id, vector, bundle_version, created_at) VALUES (?, ?, ?, ?, ?)",
            [(r.user_id, r.item_id, vector_blob(r.vector), r.bundle_version, _now()) for r in rows],
        )

    def interaction_count(self, user_id: str) -> int:
        return self._db.execute("SELECT COUNT(*) FROM interactions WHERE user_id = ?", (user_id,)).fetchone()[0]

    def _is_live(self, item_id: str, in_bundle: bool) -> bool:
        if self._db.execute("SELECT 1 FROM items WHERE item_id = ?", (item_id,)).fetchone() is not None:
            return True
        return in_bundle and self._db.execute(
            "SELECT 1 FROM deleted_items WHERE item_id = ?", (item_id,)).fetchone() is None


def _recall(db: sqlite3.Connection, request: IdempotentRequest, ttl_s: float) -> Reply | None:
    row = db.execute("SELECT fingerprint, status, body FROM idempotency_keys WHERE key = ? AND created_at >= ?",
                     (request.key, time.time() - ttl_s)).fetchone()
    if row is None:
        return None
    fingerprint, status, body = row
    if fingerprint != request.fingerprint:
        raise KeyReused(request.key)
    return Reply(status, json.loads(body), replayed=True)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _add_column(db: sqlite3.Connection, table: str, column: str) -> None:
    """ALTER TABLE ADD COLUMN unless the table has it (one created by this release's schema)."""
    if column.split()[0] not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def _statements(script: str) -> list[str]:
    return [statement.strip() for statement in script.split(";") if statement.strip()]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _item(row: tuple) -> StoredItem:
    item_id, fields, vector, bundle_version, created_at, change_seq = row
    return StoredItem(item_id, json.loads(fields), blob_vector(vector).copy(),
                      bundle_version, datetime.fromisoformat(created_at), change_seq=change_seq)
