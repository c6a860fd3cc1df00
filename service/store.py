"""Durable log of what clients changed: ingested items, withdrawn items, interactions.

SQLite in the data dir, WAL journal with `synchronous=FULL`: a write returns only once it is
on disk, and the API answers only after the write returns, so an acknowledged change survives
a crash. Items ingested together are written in one transaction (one disk sync for all).
Every item write also appends to the `item_changes` log and every interaction has a sequence
number: each worker process applies both logs, in order, to its own copy of the index and
the users (`service.follower`), at start-up and whenever another process wrote.
Conflicts (an existing id, a missing id) are decided inside the write transaction, so two
processes cannot both create one item. Item images are kept so items can be re-encoded when a
new bundle (another model) is deployed over the same data dir. Each database gets a random
identity when it is created (`identity`), so what others keep about it (cached user vectors)
is not mistaken for the state of a new database in a wiped data dir.
"""

import fcntl
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from service.errors import Conflict, NotFound

SCHEMA_VERSION = 2
_ITEM_COLUMNS = "item_id, fields, vector, bundle_version, created_at"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY, fields TEXT NOT NULL, image BLOB NOT NULL, vector BLOB NOT NULL,
    bundle_version TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deleted_items (item_id TEXT PRIMARY KEY, deleted_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS interactions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, item_id TEXT NOT NULL,
    vector BLOB NOT NULL, bundle_version TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS item_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL, vector BLOB, bundle_version TEXT,
    created_at TEXT NOT NULL)
"""
# schema 1 had no item_changes log: it is rebuilt from the live tables (deletions, then items)
_MIGRATE_FROM_1 = """
INSERT INTO item_changes (item_id, vector, bundle_version, created_at)
    SELECT item_id, NULL, NULL, deleted_at FROM deleted_items;
INSERT INTO item_changes (item_id, vector, bundle_version, created_at)
    SELECT item_id, vector, bundle_version, created_at FROM items ORDER BY rowid
"""


@dataclass
class StoredItem:
    """An ingested item; `image` is only loaded when asked for (`Store.image`)."""

    item_id: str
    fields: dict[str, str]
    vector: np.ndarray
    bundle_version: str
    created_at: datetime
    image: bytes | None = None


@dataclass
class ItemWrite:
    """One item to put: `in_bundle` says whether the id is one of the bundle's items (live
    unless withdrawn); with `replace` off a live item is a conflict."""

    item: StoredItem
    in_bundle: bool
    replace: bool


@dataclass
class StoredInteraction:
    """One interaction with the item's vector at the time (so a replayed fold-in is exact)."""

    user_id: str
    item_id: str
    vector: np.ndarray
    bundle_version: str


@dataclass
class ItemChange:
    """One entry of the item log: an item put (with its vector) or withdrawn (`vector` None)."""

    seq: int
    item_id: str
    vector: np.ndarray | None
    bundle_version: str | None


class Store:
    """The SQLite file `DATA_DIR/service.sqlite3`, shared by every worker process.

    Writes and look-ups go through one connection, safe from several threads. The logs are
    read through a second connection by one thread at a time (the follower): SQLite's
    `data_version` on it tells cheaply whether any connection has committed since it last looked.
    """

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "service.sqlite3"
        self._lock = threading.Lock()
        self._db = _connect(self.path)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            found = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            for statement in _statements(_SCHEMA):
                self._db.execute(statement)
            if found is not None and int(found[0]) == 1:
                for statement in _statements(_MIGRATE_FROM_1):
                    self._db.execute(statement)
            elif found is not None and int(found[0]) != SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: schema version {found[0]}, this service uses {SCHEMA_VERSION}")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (uuid.uuid4().hex,))
            self._identity = self._db.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]
        self._log_reader = _connect(self.path)
        self._seen_data_version: int | None = None

    def identity(self) -> str:
        """A random id given to this database when it was created (a wiped data dir gets a new one)."""
        return self._identity

    def put_item(self, item: StoredItem, in_bundle: bool, replace: bool) -> bool:
        """Insert or replace one item (its image is required) and log it; returns whether it
        replaced a live item. `Conflict` when the item is live and `replace` is off."""
        result = self.put_items([ItemWrite(item, in_bundle, replace)])[0]
        if isinstance(result, Conflict):
            raise result
        return result

    def put_items(self, writes: Sequence[ItemWrite]) -> list[bool | Conflict]:
        """`put_item` for several items in one transaction, in order; per item, whether it
        replaced a live item or the `Conflict` that kept it out (the others are written)."""
        for write in writes:
            if write.item.image is None:
                raise ValueError(f"item {write.item.item_id!r}: the image must be stored with the item")
        with self._write() as db:
            return [self._put(db, write) for write in writes]

    def delete_item(self, item_id: str, in_bundle: bool) -> None:
        """Withdraw a live item (ingested or from the bundle) and log it; `NotFound` otherwise."""
        with self._write() as db:
            if not self._is_live(db, item_id, in_bundle):
                raise NotFound(f"item {item_id!r} is not in the catalog (never ingested or already deleted)")
            db.execute("DELETE FROM items WHERE item_id = ?", (item_id,))
            db.execute("INSERT OR REPLACE INTO deleted_items VALUES (?, ?)", (item_id, _now()))
            db.execute("INSERT INTO item_changes (item_id, vector, bundle_version, created_at) "
                       "VALUES (?, NULL, NULL, ?)", (item_id, _now()))

    def add_interactions(self, rows: list[StoredInteraction]) -> None:
        with self._write() as db:
            db.executemany(
                "INSERT INTO interactions (user_id, item_id, vector, bundle_version, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(r.user_id, r.item_id, _blob(r.vector), r.bundle_version, _now()) for r in rows],
            )

    def get_item(self, item_id: str) -> StoredItem | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE item_id = ?", (item_id,)).fetchone()
        return None if row is None else _item(row)

    def image(self, item_id: str) -> bytes:
        with self._lock:
            return self._db.execute("SELECT image FROM items WHERE item_id = ?", (item_id,)).fetchone()[0]

    def items_from_other_bundles(self, bundle_version: str) -> list[StoredItem]:
        """Ingested items (without images) stored under another bundle version, oldest write first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE bundle_version != ? ORDER BY rowid", (bundle_version,)
            )
            return [_item(row) for row in rows]

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A lock file in the data dir, held across processes for the `with` body."""
        with (self.path.parent / f".{name}.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def changed(self) -> bool:
        """Whether any connection committed since the last call (True the first time)."""
        version = self._log_reader.execute("PRAGMA data_version").fetchone()[0]
        changed, self._seen_data_version = version != self._seen_data_version, version
        return changed

    def item_changes(self, after: int) -> list[ItemChange]:
        """The item log after sequence number `after`, in order."""
        rows = self._log_reader.execute(
            "SELECT seq, item_id, vector, bundle_version FROM item_changes WHERE seq > ? ORDER BY seq", (after,)
        )
        return [ItemChange(seq, item_id, None if vector is None else np.frombuffer(vector, dtype=np.float32), version)
                for seq, item_id, vector, version in rows]

    def interactions(self, after: int) -> list[tuple[int, StoredInteraction]]:
        """Interactions after sequence number `after`, oldest first, with their sequence numbers."""
        rows = self._log_reader.execute(
            "SELECT seq, user_id, item_id, vector, bundle_version FROM interactions WHERE seq > ? ORDER BY seq",
            (after,),
        )
        return [(seq, StoredInteraction(user_id, item_id, np.frombuffer(vector, dtype=np.float32), version))
                for seq, user_id, item_id, vector, version in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._log_reader.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes SQLite's write lock first, so checks
        made inside it cannot be raced by another process."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            yield self._db

    def _put(self, db: sqlite3.Connection, write: ItemWrite) -> bool | Conflict:
        item = write.item
        live = self._is_live(db, item.item_id, write.in_bundle)
        if live and not write.replace:
            return Conflict(f"item {item.item_id!r} already exists; send replace=true to replace it")
        db.execute("DELETE FROM items WHERE item_id = ?", (item.item_id,))
        db.execute(
            "INSERT INTO items (item_id, fields, image, vector, bundle_version, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (item.item_id, json.dumps(item.fields), item.image, _blob(item.vector), item.bundle_version,
             item.created_at.isoformat()),
        )
        db.execute("DELETE FROM deleted_items WHERE item_id = ?", (item.item_id,))
        db.execute("INSERT INTO item_changes (item_id, vector, bundle_version, created_at) VALUES (?, ?, ?, ?)",
                   (item.item_id, _blob(item.vector), item.bundle_version, _now()))
        return live

    @staticmethod
    def _is_live(db: sqlite3.Connection, item_id: str, in_bundle: bool) -> bool:
        if db.execute("SELECT 1 FROM items WHERE item_id = ?", (item_id,)).fetchone() is not None:
            return True
        return in_bundle and db.execute("SELECT 1 FROM deleted_items WHERE item_id = ?", (item_id,)).fetchone() is None


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _statements(script: str) -> list[str]:
    return [statement.strip() for statement in script.split(";") if statement.strip()]


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _item(row: tuple) -> StoredItem:
    item_id, fields, vector, bundle_version, created_at = row
    return StoredItem(item_id, json.loads(fields), np.frombuffer(vector, dtype=np.float32).copy(),
                      bundle_version, datetime.fromisoformat(created_at))
