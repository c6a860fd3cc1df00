"""Keeps one process's live state in step with the store's logs.

The store (SQLite in the data dir, or a PostgreSQL shared by replicas) is the source of truth;
the catalog (`service.catalog`), the users' fold-in sums and the popularity counts of a process are a projection of
its two logs, item changes and interactions. `catch_up` applies whatever was appended since it
last looked, in log order, so every process serving the same store ends in the same state, and
a change written by one process is seen by the next request to any other (the check costs one
`PRAGMA` on SQLite, one indexed query on PostgreSQL).

Writers only append to the store; every request first calls `catch_up` (a dependency of every
handler, `service.api.deps.get_services`), which applies a process's own changes like anyone
else's. Where the store can tell of other processes' commits (PostgreSQL's NOTIFY), `follow`
also catches up as soon as it is told, so an idle replica does not wait for a request.
`catch_up` must run on one thread (the event loop's, after start-up).
"""

import asyncio
import logging
import threading
from collections.abc import Callable

from service.catalog import ItemCatalog
from service.metrics import Metrics
from service.popularity import Popularity
from service.snapshot import LogPosition
from service.store import ItemChange, Store, StoredInteraction
from service.users import UserState

log = logging.getLogger(__name__)


class StoreFollower:
    """Applies the item and interaction logs after its two cursors."""

    def __init__(self, store: Store, catalog: ItemCatalog, users: UserState, popularity: Popularity,
                 metrics: Metrics, bundle_version: str, position: LogPosition = LogPosition(),
                 on_other_bundle: Callable[[], None] = lambda: None) -> None:
        """`position`: where the logs have been applied up to already (a snapshot's, `service.snapshot`);
        `on_other_bundle` is called for each item change skipped for its bundle version (so this
        replica's model encodes the item: `service.reencode`)."""
        self.store = store
        self.catalog = catalog
        self.index = catalog.items
        self.users = users
        self.popularity = popularity
        self.metrics = metrics
        self.bundle_version = bundle_version
        self._on_other_bundle = on_other_bundle
        self._item_seq = position.item_seq
        self._interaction_seq = position.interaction_seq
        self._applied_items = metrics.log_entries_applied.labels("items")
        self._applied_interactions = metrics.log_entries_applied.labels("interactions")
        self._scheduled = threading.Event()  # a background catch-up is queued on the loop

    def catch_up(self) -> None:
        if not self.store.changed():
            return
        changes = self.store.item_changes(after=self._item_seq)
        for change in changes:
            self._apply_item(change)
            self._item_seq = change.seq
        interactions = self.store.interactions(after=self._interaction_seq)
        for seq, interaction in interactions:
            self._apply_interaction(interaction)
            self._interaction_seq = seq
        self._applied_items.inc(len(changes))
        self._applied_interactions.inc(len(interactions))
        self.metrics.index_size.set(self.index.size)

    @property
    def position(self) -> LogPosition:
        """The last item change and the last interaction applied."""
        return LogPosition(self._item_seq, self._interaction_seq)

    def follow(self, loop: asyncio.AbstractEventLoop) -> None:
        """Catch up on `loop` whenever the store tells of a commit (from its own thread); many
        notifications while one catch-up waits for the loop make one catch-up."""
        def wake() -> None:
            if not self._scheduled.is_set():
                self._scheduled.set()
                loop.call_soon_threadsafe(self._catch_up_in_background)

        self.store.watch(wake)

    def _catch_up_in_background(self) -> None:
        self._scheduled.clear()  # before catching up: a commit from now on queues another
        try:
            self.catch_up()
        except Exception:  # the store unreachable: the next notification, poll or request retries
            log.exception("could not apply the store's logs")

    def _apply_item(self, change: ItemChange) -> None:
        if change.vector is None:
            self.catalog.remove(change.item_id)
        elif change.bundle_version == self.bundle_version:
            self.catalog.put(change.item_id, change.vector, change.fields)
        else:  # another model's vector, never indexed here: this model's comes later in the log
            self._on_other_bundle()

    def _apply_interaction(self, interaction: StoredInteraction) -> None:
        """Fold the interaction in. One stored under another bundle version uses the item's
        current vector (the old one lives in another model's space) or, for an item gone since,
        is only kept as seen."""
        vector = interaction.vector
        if interaction.bundle_version != self.bundle_version:
            row = self.index.row_of(interaction.item_id)
            if row is None:
                self.users.record(interaction.user_id, [interaction.item_id], None)
                return
            vector = self.index.vectors([row])[0]
        self.users.record(interaction.user_id, [interaction.item_id], vector[None, :])
        self.popularity.add([interaction.item_id])
