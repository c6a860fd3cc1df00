"""Store backends for the tests: SQLite in a fresh data dir, or a fresh PostgreSQL database.

Tests marked `both_stores` run once per backend (`conftest.py` parametrizes `store_backend`).
The PostgreSQL is the one at 127.0.0.1:5432 (user postgres, trust authentication), which
`make test` starts when none answers (`scripts/ensure_postgres.sh`); a test that needs it and
finds none fails, it does not skip.
"""

import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from service.idempotency import DEFAULT_TTL_S
from service.store import Store, open_store

BACKENDS = ("sqlite", "postgresql")
POSTGRES = "postgresql://postgres@127.0.0.1:5432"


@dataclass
class Database:
    """One test's store: `url` None means SQLite in `data_dir`."""

    backend: str
    data_dir: Path
    url: str | None = None
    opened: list[Store] = field(default_factory=list)

    def open(self, idempotency_ttl_s: float = DEFAULT_TTL_S) -> Store:
        """A store over this database (closed after the test, if the test did not)."""
        self.opened.append(open_store(self.url, self.data_dir, idempotency_ttl_s))
        return self.opened[-1]

    def query(self, sql: str, *params: Any) -> list[tuple]:
        """Run SQL on the database directly (`?` placeholders on both backends)."""
        if self.url is None:
            with sqlite3.connect(self.data_dir / "service.sqlite3") as db:
                return db.execute(sql, params).fetchall()
        with psycopg.connect(self.url, autocommit=True) as db:
            cursor = db.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    def count(self, table: str, where: str = "TRUE", *params: Any) -> int:
        return self.query(f"SELECT COUNT(*) FROM {table} WHERE {where}", *params)[0][0]


def admin() -> psycopg.Connection:
    try:
        return psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"no PostgreSQL answers at {POSTGRES} (start one: bash scripts/ensure_postgres.sh): {exc}")


def create_postgres_database() -> str:
    """A new empty database; its URL."""
    name = f"cliper_test_{uuid.uuid4().hex[:12]}"
    with admin() as db:
        db.execute(f"CREATE DATABASE {name}")
    return f"{POSTGRES}/{name}"


def drop_postgres_database(url: str) -> None:
    with admin() as db:
        db.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
