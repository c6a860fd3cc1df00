"""Snapshots at run time (`service.snapshot`): loaded at start-up, written in the background and at shutdown.

At start-up `starting_state` restores the catalog, users and popularity from the newest usable
snapshot of the process's key, or builds them from the bundle where there is none; the follower
then applies the logs after the snapshot's position.

A thread looks once a second at how far the follower has come since the newest snapshot of its
key in the folder (any worker's): once `every_changes` log entries (by sequence number, both
logs together), or `every_s` seconds with at least one, it takes a snapshot. The copy is made on
the event loop's thread, between two catch-ups, so it holds one consistent position: the index's
(a serialized copy of the FAISS index under the index's lock, a few ms for 100k vectors of 64
dimensions), the users' and the popularity counts'. Files are written and synced off the loop,
in the thread. A clean shutdown applies the logs once more and writes one more snapshot when
anything was applied since the newest.
"""

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from cliper.bundle import LoadedBundle
from service.follower import StoreFollower
from service.catalog import ItemCatalog
from service.popularity import Popularity
from service.snapshot import LogPosition, Snapshot, SnapshotDir, SnapshotKey
from service.users import UserState

log = logging.getLogger(__name__)

CHECK_S = 1.0
CAPTURE_TIMEOUT_S = 60.0  # the loop did not get to the copy: skip this one, try again later


@dataclass
class StartingState:
    """What the follower starts from, and the log position it already includes."""

    catalog: ItemCatalog
    users: UserState
    popularity: Popularity
    position: LogPosition


def starting_state(bundle: LoadedBundle, search_threads: int, snapshots: SnapshotDir | None,
                   key: SnapshotKey) -> StartingState:
    """The newest usable snapshot of `key` restored, or the bundle's state at position 0."""

    def restore(snapshot: Snapshot) -> StartingState:
        catalog = ItemCatalog.restore(bundle, snapshot.catalog, search_threads)
        users = UserState(bundle, key.fold_in_rule, snapshot.users)
        return StartingState(catalog, users, Popularity(bundle, catalog.items, snapshot.popularity),
                             snapshot.position)

    started = time.perf_counter()
    restored = snapshots.load(key, restore) if snapshots is not None else None
    if restored is not None:
        log.info("loaded the snapshot at item seq %d, interaction seq %d (%d rows) in %.2fs",
                 restored.position.item_seq, restored.position.interaction_seq, restored.catalog.items.n_rows,
                 time.perf_counter() - started)
        return restored
    catalog = ItemCatalog.from_bundle(bundle, search_threads)
    return StartingState(catalog, UserState(bundle, key.fold_in_rule), Popularity(bundle, catalog.items),
                         LogPosition())


def capture(follower: StoreFollower, key: SnapshotKey) -> Snapshot:
    """A copy of the follower's projection and its position; call it on the follower's thread."""
    return Snapshot(key, follower.position, follower.catalog.state(), follower.users.folded(),
                    follower.popularity.extra())


class Snapshotter:
    """Writes snapshots of one follower's state into `directory` (module docstring)."""

    def __init__(self, directory: SnapshotDir, key: SnapshotKey, follower: StoreFollower, every_changes: int,
                 every_s: float) -> None:
        self.directory = directory
        self.key = key
        self.follower = follower
        self.every_changes = every_changes
        self.every_s = every_s
        self._started = time.time()
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="snapshotter", daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the background thread; `loop` runs the follower."""
        self._loop = loop
        self._thread.start()

    async def stop(self) -> None:
        """Stop the thread (the loop keeps running meanwhile, so a copy it waits for is made),
        apply what was written since the last request, then write a last snapshot if anything
        was applied since the newest. Call it on the follower's thread (the event loop's)."""
        self._stopping.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)
        try:
            self.follower.catch_up()
        except Exception:  # the store unreachable: the snapshot holds what was applied
            log.exception("could not apply the store's logs at shutdown")
        try:
            if self._behind() > 0:
                await asyncio.to_thread(self._write, *self._copy())
        except Exception:
            log.exception("could not write a snapshot at shutdown")

    def due(self) -> bool:
        """Whether enough was applied, or long enough ago, since the newest snapshot."""
        newest = self.directory.newest(self.key)
        behind = self._behind(newest.position if newest is not None else LogPosition())
        age = time.time() - (newest.created_at if newest is not None else self._started)
        return behind >= self.every_changes or (behind > 0 and age >= self.every_s)

    def _behind(self, since: LogPosition | None = None) -> int:
        if since is None:
            newest = self.directory.newest(self.key)
            since = newest.position if newest is not None else LogPosition()
        return self.follower.position.entries_after(since)

    def _run(self) -> None:
        retry_at = 0.0
        while not self._stopping.wait(min(CHECK_S, self.every_s)):
            try:
                if time.time() >= retry_at and self.due():
                    copied = self._copy_on_loop()
                    if copied is not None:
                        self._write(*copied)
            except Exception:
                log.exception("could not write a snapshot; trying again in %.0fs", self.every_s)
                retry_at = time.time() + self.every_s

    def _copy(self) -> tuple[Snapshot, float]:
        """The snapshot, and the seconds the copy took (the time it held up the event loop)."""
        started = time.perf_counter()
        return capture(self.follower, self.key), time.perf_counter() - started

    def _copy_on_loop(self) -> tuple[Snapshot, float] | None:
        async def copy() -> tuple[Snapshot, float]:
            return self._copy()

        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(copy(), self._loop)
        try:
            return future.result(CAPTURE_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            return None

    def _write(self, snapshot: Snapshot, copy_s: float) -> None:
        started = time.perf_counter()
        path = self.directory.write(snapshot)
        if path is not None:
            log.info("snapshot %s: copied on the event loop in %.1f ms, written in %.2fs (item seq %d, interaction "
                     "seq %d, %d rows)", path.name, copy_s * 1000, time.perf_counter() - started,
                     snapshot.position.item_seq, snapshot.position.interaction_seq, len(snapshot.catalog.items.live))
