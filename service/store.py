"""Durable log of what clients changed: ingested items, withdrawn items, interactions.

SQLite in the data dir, WAL journal with `synchronous=FULL`: a write returns only once it is
on disk, and the API answers only after the write returns, so an acknowledged change survives
a crash. At start-up the service replays it onto the bundle. Item images are kept so items can
be re-encoded when a new bundle (another model) is deployed over the same data dir.
"""

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
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
class StoredInteraction:
    """One interaction with the item's vector at the time (so a replayed fold-in is exact)."""

    user_id: str
    item_id: str
    vector: np.ndarray
    bundle_version: str


class Store:
    """The SQLite file `DATA_DIR/service.sqlite3`; safe to call from several threads."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "service.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._lock, self._db:
            self._db.execute("BEGIN")
            for statement in _statements():
                self._db.execute(statement)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        version = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        if int(version) != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: schema version {version}, this service uses {SCHEMA_VERSION}")

    def put_item(self, item: StoredItem) -> None:
        """Insert or replace an item (its image is required); it is no longer withdrawn."""
        if item.image is None:
            raise ValueError(f"item {item.item_id!r}: the image must be stored with the item")
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM items WHERE item_id = ?", (item.item_id,))
            self._db.execute(
                "INSERT INTO items (item_id, fields, image, vector, bundle_version, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (item.item_id, json.dumps(item.fields), item.image, _blob(item.vector),
                 item.bundle_version, item.created_at.isoformat()),
            )
            self._db.execute("DELETE FROM deleted_items WHERE item_id = ?", (item.item_id,))

    def delete_item(self, item_id: str) -> None:
        """Withdraw an item (ingested or from the bundle)."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM items WHERE item_id = ?", (item_id,))
            self._db.execute("INSERT OR REPLACE INTO deleted_items VALUES (?, ?)", (item_id, _now()))

    def add_interactions(self, rows: list[StoredInteraction]) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
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

    def items(self) -> list[StoredItem]:
        """Ingested items (without images), oldest write first."""
        with self._lock:
            return [_item(row) for row in self._db.execute(f"SELECT {_ITEM_COLUMNS} FROM items ORDER BY rowid")]

    def deleted_ids(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT item_id FROM deleted_items")]

    def interactions(self) -> Iterator[StoredInteraction]:
        """Every interaction, oldest first (streamed; for the start-up replay)."""
        with self._lock:
            cursor = self._db.execute("SELECT user_id, item_id, vector, bundle_version FROM interactions ORDER BY seq")
            for user_id, item_id, vector, version in cursor:
                yield StoredInteraction(user_id, item_id, np.frombuffer(vector, dtype=np.float32), version)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _statements() -> list[str]:
    return [statement.strip() for statement in _SCHEMA.split(";") if statement.strip()]


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _item(row: tuple) -> StoredItem:
    item_id, fields, vector, bundle_version, created_at = row
    return StoredItem(item_id, json.loads(fields), np.frombuffer(vector, dtype=np.float32).copy(),
                      bundle_version, datetime.fromisoformat(created_at))
