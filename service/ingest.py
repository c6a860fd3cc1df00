"""Item ingestion, look-up and withdrawal, and the start-up re-encoding of items from older models.

An ingested item is decoded and prepared in a worker thread (bad input fails here, before any
batching), encoded in a micro-batch with concurrent requests, persisted (items that reach the
store together share one transaction, so one disk sync), and only then added to the index (by
the store follower): when the client gets its 201 the item is durable and a recommendation
candidate in every worker process.
"""

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from tqdm import tqdm

from service.batcher import MicroBatcher
from service.encoders import ItemEncoder, PreparedItem
from service.errors import Conflict, NotFound
from service.follower import StoreFollower
from service.index import ItemIndex
from service.metrics import Metrics
from service.store import ItemWrite, Store, StoredItem

log = logging.getLogger(__name__)
ITEMS_PER_TRANSACTION = 64  # most items one store write takes from the queue


@dataclass
class Ingested:
    item_id: str
    index_size: int
    replaced: bool


@dataclass
class ItemInfo:
    item_id: str
    source: str  # "bundle" or "ingested"
    fields: dict[str, str] | None
    created_at: datetime | None
    vector: np.ndarray


class ItemService:
    """POST / GET / DELETE of items over the index, the store and the encoders."""

    def __init__(
        self,
        encoder: ItemEncoder,
        index: ItemIndex,
        store: Store,
        follower: StoreFollower,
        metrics: Metrics,
        bundle_version: str,
        bundle_item_ids: Sequence[str],
        max_batch_size: int,
        max_batch_wait_s: float,
    ) -> None:
        self.encoder = encoder
        self.index = index
        self.store = store
        self.follower = follower
        self._bundle_ids = frozenset(bundle_item_ids)
        self.metrics = metrics
        self.bundle_version = bundle_version
        self.batcher: MicroBatcher[PreparedItem, np.ndarray] = MicroBatcher(
            self.encoder.encode, max_batch_size, max_batch_wait_s
        )
        # no wait: items that arrive while a transaction syncs go together in the next one
        self.writer: MicroBatcher[ItemWrite, bool | Conflict] = MicroBatcher(
            self._write, max_size=ITEMS_PER_TRANSACTION, max_wait_s=0.0
        )

    def start(self) -> None:
        self.batcher.start()
        self.writer.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        await self.writer.stop()

    async def ingest(self, item_id: str, fields: Mapping[str, str], image: bytes, replace: bool) -> Ingested:
        """Encode, persist and index one item; `Conflict` when it exists and `replace` is off."""
        self.follower.catch_up()
        self._check_absent(item_id, replace)  # early, to spare the encoders; the store decides
        prepared = await asyncio.to_thread(self._prepare, fields, image)
        vector = await self.batcher.submit(prepared)
        stored = StoredItem(item_id, dict(fields), vector, self.bundle_version, datetime.now(UTC), image)
        with self.metrics.timed("store"):
            replaced = await self.writer.submit(ItemWrite(stored, item_id in self._bundle_ids, replace))
        if isinstance(replaced, Conflict):
            raise replaced
        self.follower.catch_up()
        return Ingested(item_id, self.index.size, replaced)

    async def get(self, item_id: str) -> ItemInfo:
        self.follower.catch_up()
        row = self.index.row_of(item_id)
        if row is None:
            raise NotFound(f"item {item_id!r} is not in the catalog")
        stored = await asyncio.to_thread(self.store.get_item, item_id)
        vector = self.index.vectors([row])[0]
        if stored is None:
            return ItemInfo(item_id, "bundle", None, None, vector)
        return ItemInfo(item_id, "ingested", stored.fields, stored.created_at, vector)

    async def delete(self, item_id: str) -> int:
        """Withdraw an item: it is no longer recommended; returns the index size."""
        with self.metrics.timed("store"):
            await asyncio.to_thread(self.store.delete_item, item_id, item_id in self._bundle_ids)
        self.follower.catch_up()
        return self.index.size

    def reencode_stale(self) -> None:
        """Re-encode items stored under another bundle version (their vectors belong to another
        model) from their stored image and fields, and store them again (at start-up; one worker
        process does it while the others wait)."""
        with self.store.exclusive("reencode"):
            stale = self.store.items_from_other_bundles(self.bundle_version)
            if not stale:
                return
            log.info("re-encoding %d items stored under other bundle versions", len(stale))
            # tqdm's default lock is a multiprocessing one, which worker processes leak at shutdown
            tqdm.set_lock(threading.RLock())
            for item in tqdm(stale, desc="re-encode items", unit="item"):
                item.image = self.store.image(item.item_id)
                item.vector = self.encoder.encode([self._prepare(item.fields, item.image)])[0]
                item.bundle_version = self.bundle_version
                self.store.put_item(item, in_bundle=item.item_id in self._bundle_ids, replace=True)

    def _write(self, writes: list[ItemWrite]) -> list[bool | Conflict]:
        self.metrics.store_batch_size.observe(len(writes))
        return self.store.put_items(writes)

    def _prepare(self, fields: Mapping[str, str], image: bytes) -> PreparedItem:
        return self.encoder.prepare(fields, self.encoder.decode(image))

    def _check_absent(self, item_id: str, replace: bool) -> None:
        if not replace and self.index.row_of(item_id) is not None:
            raise Conflict(f"item {item_id!r} already exists; send replace=true to replace it")
