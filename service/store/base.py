"""The store's interface: what the service asks of its catalog of record, whichever database keeps it.

The store keeps what clients changed (ingested and withdrawn items, interactions) durably, as
two logs with sequence numbers: `item_changes` and `interactions`. Each process applies both,
in order, to its own index and users (`service.follower`). An item's entry carries the bundle
version of its vector; an item written under one version gets one more entry per other version
that re-encodes it (`add_reencoded`, `service.reencode`), so the log holds a vector of every
item for every model in use. A backend must guarantee:

- a write is durable when its transaction returns (the API answers only after that);
- a conflict (an existing id, a missing id) is decided inside the write transaction, by the
  database, so two processes (or hosts) cannot both create one item;
- the logs' sequence numbers are visible in commit order: once a reader sees entry n, every
  entry before n that will ever exist is visible too (a follower never skips one);
- `changed()` after a write transaction of this process returns True (read-your-writes).

Writes go through `Store.transaction()`, a `WriteTransaction` whose changes commit together; it
also keeps idempotency keys with their replies (`service.idempotency`) in the same commit.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from service.errors import Conflict, NotFound
from service.idempotency import IdempotentRequest, Reply

PURGE_PER_KEY = 2  # expired keys deleted with each key stored: the table never outgrows the live ones by much


@dataclass
class StoredItem:
    """An ingested item; `image` is only loaded when asked for (`Store.image`)."""

    item_id: str
    fields: dict[str, str]
    vector: np.ndarray
    bundle_version: str
    created_at: datetime
    image: bytes | None = None
    change_seq: int | None = None  # the log entry of its last write (set when read from the store)


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
    """One entry of the item log: an item put (with its packed encoding, `cliper.encoding`) or
    withdrawn (`vector` None). `fields` are the item's text fields as stored now (read with the
    log: a later entry of a replaced item carries the same), empty for a withdrawn item."""

    seq: int
    item_id: str
    vector: np.ndarray | None
    bundle_version: str | None
    fields: dict[str, str] = field(default_factory=dict)


class WriteTransaction(ABC):
    """The changes of one `Store.transaction`: they are all committed together, or none is."""

    def once(self, request: IdempotentRequest | None, write: Callable[[], Reply]) -> Reply:
        """`write()`'s reply, remembered under the request's key; or, for a key already used by
        this request, the reply remembered then, without writing again. `KeyReused` for a key
        used by another request; nothing is remembered when `write` raises."""
        if request is None:
            return write()
        previous = self.recall(request)
        if previous is not None:
            return previous
        reply = write()
        self.remember(request, reply)
        return reply

    @abstractmethod
    def put_item(self, write: ItemWrite) -> bool | Conflict:
        """Store an item (its image is required) and log it: whether it replaced a live item,
        or the `Conflict` that kept it out (live, and `replace` off)."""

    @abstractmethod
    def delete_item(self, item_id: str, in_bundle: bool) -> None:
        """Withdraw a live item (ingested or from the bundle) and log it; `NotFound` otherwise."""

    @abstractmethod
    def add_interactions(self, rows: Sequence[StoredInteraction]) -> None:
        """Append interactions to their log."""

    @abstractmethod
    def add_reencoded(self, item: StoredItem, vector: np.ndarray, bundle_version: str) -> bool:
        """Log `vector` as `bundle_version`'s vector of `item` (read with its `change_seq`), if the
        item is still live with that content (neither replaced nor withdrawn since) and no vector
        of that version was logged for it yet (the database decides); whether it was logged. The
        item's row keeps the vector it was written with."""

    @abstractmethod
    def interaction_count(self, user_id: str) -> int:
        """The user's interactions in the store, these included (every bundle version's)."""

    @abstractmethod
    def recall(self, request: IdempotentRequest) -> Reply | None:
        """The reply kept under the request's key (None if none is kept, or it expired);
        `KeyReused` when the key came with another request."""

    @abstractmethod
    def remember(self, request: IdempotentRequest, reply: Reply) -> None:
        """Keep the reply under the request's key, and purge up to `PURGE_PER_KEY` expired keys."""


class Store(ABC):
    """The catalog of record: SQLite in the data dir (`service.store.sqlite`) or PostgreSQL
    (`service.store.postgres`), chosen by `service.store.open_store`. Safe to use from several
    threads, except the log readers (`changed`, `item_changes`, `interactions`): one thread
    at a time, the follower's."""

    @abstractmethod
    def identity(self) -> str:
        """A random id given to this database when it was created (a wiped one gets a new one),
        so what others keep about it (cached user vectors) is not mistaken for another's state."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[WriteTransaction]:
        """One write transaction: it commits (durably) when the `with` body ends, or rolls back
        on an exception. Its checks cannot be raced by another process's writes."""

    @abstractmethod
    def recall(self, request: IdempotentRequest) -> Reply | None:
        """The reply remembered under the request's key, None for a key not (or no longer) kept;
        `KeyReused` when the key came with another request. A look-up only: a write decides again
        inside its transaction (`WriteTransaction.once`)."""

    @abstractmethod
    def get_item(self, item_id: str) -> StoredItem | None:
        """An ingested item, without its image."""

    @abstractmethod
    def image(self, item_id: str) -> bytes | None:
        """The stored image of an ingested item (None for one not, or no longer, stored)."""

    @abstractmethod
    def items_to_reencode(self, bundle_version: str) -> list[StoredItem]:
        """Ingested items (without images) that have no vector of `bundle_version`: written
        under another bundle version and not re-encoded for this one since (`add_reencoded`),
        oldest write first."""

    @abstractmethod
    def exclusive(self, name: str) -> AbstractContextManager[None]:
        """A lock named `name`, held for the `with` body against every process of this store."""

    @abstractmethod
    def changed(self) -> bool:
        """Whether anyone committed to the logs since the last call (True the first time)."""

    @abstractmethod
    def item_changes(self, after: int) -> list[ItemChange]:
        """The item log after sequence number `after`, in order."""

    @abstractmethod
    def interactions(self, after: int) -> list[tuple[int, StoredInteraction]]:
        """Interactions after sequence number `after`, oldest first, with their sequence numbers."""

    @abstractmethod
    def watch(self, on_change: Callable[[], None]) -> None:
        """Call `on_change` (from another thread) soon after another process commits, where the
        backend can be told (PostgreSQL); a backend that cannot returns without calling it."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and stop watching."""

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
        with self.transaction() as tx:
            return [tx.put_item(write) for write in writes]

    def delete_item(self, item_id: str, in_bundle: bool) -> None:
        """Withdraw a live item (ingested or from the bundle) and log it; `NotFound` otherwise."""
        with self.transaction() as tx:
            tx.delete_item(item_id, in_bundle)

    def add_interactions(self, rows: list[StoredInteraction]) -> None:
        with self.transaction() as tx:
            tx.add_interactions(rows)


def vector_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def blob_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


def conflict(item_id: str) -> Conflict:
    return Conflict(f"item {item_id!r} already exists; send replace=true to replace it")


def not_found(item_id: str) -> NotFound:
    return NotFound(f"item {item_id!r} is not in the catalog (never ingested or already deleted)")

