"""Versioned SQL migrations of the PostgreSQL store, applied at start-up.

The files `migrations/postgres/NNNN_name.sql`, shipped in the package, are applied in order of
NNNN, each in its own transaction together with its row in `schema_version`. Replicas that
start at once take a session-level advisory lock first: one applies what is missing, the others
wait and then find nothing left to do. A database whose schema is newer than the files of this
release (a newer release migrated it) is refused rather than served with the wrong schema.
"""

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from service.store.locks import advisory_key

_FILE = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
MIGRATION_LOCK = advisory_key("cliper.store.migrate")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The package's migrations, in order; numbered 1, 2, 3 ... without gaps."""
    folder = resources.files("service.store") / "migrations" / "postgres"
    found = sorted(
        (Migration(int(match[1]), entry.name, entry.read_text(encoding="utf-8"))
         for entry in folder.iterdir() if (match := _FILE.fullmatch(entry.name))),
        key=lambda migration: migration.version,
    )
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"the PostgreSQL migrations are not numbered 1..{len(found)}: {versions}")
    return found


def migrate(db: psycopg.Connection) -> int:
    """Bring the database (an autocommit connection) up to this release's schema; its version."""
    known = migrations()
    newest = known[-1].version
    db.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, name text NOT NULL, "
                   "applied_at timestamptz NOT NULL DEFAULT now())")
        current = db.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        if current > newest:
            raise RuntimeError(f"the PostgreSQL store has schema version {current}, this service knows up to "
                               f"{newest}: a newer release migrated it; run that release (or a newer one)")
        for migration in known[current:]:
            with db.transaction():
                db.execute(migration.sql)
                db.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                           (migration.version, migration.name))
        return newest
    finally:
        db.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
