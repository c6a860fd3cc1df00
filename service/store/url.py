"""Checks `CLIPER_STORE_URL` at start-up, so a typo is named before any connection is tried."""

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

SCHEMES = ("postgresql://", "postgres://")


def check_store_url(url: str) -> str:
    """The URL as given, or `ValueError` saying what a store URL looks like (never echoing it:
    it may hold a password)."""
    if not url.startswith(SCHEMES):
        raise ValueError("the store URL must be a PostgreSQL URL, postgresql://user:password@host:5432/dbname "
                         "(leave it unset for SQLite in the data dir)")
    try:
        conninfo_to_dict(url)
    except ProgrammingError as exc:
        raise ValueError(f"the store URL is not a valid PostgreSQL URL: {exc}") from None
    return url
