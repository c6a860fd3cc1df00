"""Tells a process that another one committed to the PostgreSQL store: LISTEN/NOTIFY, polling as a fallback.

A thread of its own holds one connection that LISTENs on the store's channel (every write
transaction that appends to a log NOTIFYs it, delivered at commit) and calls `on_change` for
each notification. Notifications sent while the connection is down are lost, and a connection
can die silently, so `on_change` is also called after every (re)connection and every `poll_s`
without a notification: the callee then compares the logs' last sequence numbers itself.
"""

import logging
import threading
import time
from collections.abc import Callable

import psycopg

log = logging.getLogger(__name__)
POLL_S = 1.0  # the longest a change waits when notifications are lost
RETRY_S = 0.5  # the wait before reconnecting after an error


class ChangeListener:
    """Calls `on_change` (from its thread) on every notification on `channel`."""

    def __init__(self, conninfo: str, channel: str, on_change: Callable[[], None], poll_s: float = POLL_S) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._on_change = on_change
        self._poll_s = poll_s
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._db: psycopg.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="store-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop at once: closing the connection ends the thread's wait for notifications."""
        with self._lock:
            self._stopping.set()
            if self._db is not None:
                self._db.close()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                if self._stopping.is_set():
                    return
                log.warning("store change listener: %s; reconnecting in %.1fs", exc, RETRY_S)
                self._on_change()
                self._stopping.wait(RETRY_S)

    def _listen(self) -> None:
        db = psycopg.connect(self._conninfo, autocommit=True, application_name="cliper-listener")
        with self._lock:
            if self._stopping.is_set():
                db.close()
                return
            self._db = db
        with db:
            db.execute(f"LISTEN {self._channel}")
            self._on_change()  # what was committed while nobody listened
            while not self._stopping.is_set():
                for _ in db.notifies(timeout=self._poll_s, stop_after=1):
                    break
                self._on_change()  # a notification, or poll_s without one
