"""The catalog of record: ingested items, withdrawals and interactions, kept durably as two logs.

`Store` is the interface (`service.store.base`); `open_store` picks the backend: SQLite in the
data dir by default (`service.store.sqlite`, the workers of one host), PostgreSQL when
`CLIPER_STORE_URL` names one (`service.store.postgres`, replicas on several hosts).
"""

from pathlib import Path

from service.idempotency import DEFAULT_TTL_S
from service.store.base import (
    ItemChange,
    ItemWrite,
    Store,
    StoredInteraction,
    StoredItem,
    WriteTransaction,
)
from service.store.sqlite import SqliteStore

__all__ = [
    "ItemChange", "ItemWrite", "SqliteStore", "Store", "StoredInteraction", "StoredItem", "WriteTransaction",
    "open_store",
]


def open_store(url: str | None, data_dir: Path, idempotency_ttl_s: float = DEFAULT_TTL_S) -> Store:
    """PostgreSQL at `url` (`postgresql://...`), or SQLite in `data_dir` when there is none."""
    if url is None:
        return SqliteStore(data_dir, idempotency_ttl_s)
    from service.store.postgres import PostgresStore  # psycopg loads libpq: only where it is used

    return PostgresStore(url, idempotency_ttl_s)
