"""Item ingestion, look-up and withdrawal; items of other models are re-encoded by `reencoder`
(`service.reencode`), which starts and stops with the service.

An ingested item is decoded and prepared in a worker thread (bad input fails here, before any
batching), encoded in a micro-batch with concurrent requests, persisted (items that reach the
store together share one transaction, so one disk sync), and only then added to the index (by
the store follower): when the client gets its 201 the item is durable and a recommendation
candidate in every worker process (each applies it before its next request).

A write's reply is made inside its store transaction and kept there with its idempotency key,
if any (`service.idempotency`). Its `index_size` is the size this worker's index reaches with
the write, as counted when it wrote (a figure concurrent writers may move on at once).
"""

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial

import numpy as np

from service.batcher import MicroBatcher
from service.encoders import ItemEncoder, PreparedItem
from service.errors import Conflict, NotFound, ServiceError
from service.idempotency import IdempotentRequest, Reply
from cliper.ids import IdMap
from cliper.thumbnails import Thumbnails
from service.catalog import ItemCatalog
from service.metrics import Metrics
from service.reencode import Reencoder
from service.store import ItemWrite, Store, StoredItem, WriteTransaction

ITEMS_PER_TRANSACTION = 64  # most items one store write takes from the queue


@dataclass
class Ingested:
    """The body of an ingestion's reply."""

    item_id: str
    index_size: int
    bundle_version: str
    replaced: bool


@dataclass
class Withdrawn:
    """The body of a withdrawal's reply."""

    item_id: str
    index_size: int
    bundle_version: str


@dataclass
class PendingWrite:
    """An encoded item on its way to the store, with the request's idempotency key if it had one."""

    write: ItemWrite
    once: IdempotentRequest | None


@dataclass
class ItemInfo:
    item_id: str
    source: str  # "bundle" or "ingested"
    fields: dict[str, str]
    view_weights: dict[str, float]
    created_at: datetime | None
    vector: np.ndarray


class ItemService:
    """POST / GET / DELETE of items over the index, the store and the encoders."""

    def __init__(
        self,
        encoder: ItemEncoder,
        catalog: ItemCatalog,
        store: Store,
        metrics: Metrics,
        bundle_version: str,
        bundle_item_ids: Sequence[str],
        max_batch_size: int,
        max_batch_wait_s: float,
        thumbnails: Thumbnails | None = None,
    ) -> None:
        self.encoder = encoder
        self.catalog = catalog
        self.index = catalog.items
        self.thumbnails = thumbnails
        self.store = store
        self._bundle_ids = IdMap.of(bundle_item_ids)  # the bundle's: is an item one of them, and its row
        self.metrics = metrics
        self.bundle_version = bundle_version
        self.batcher: MicroBatcher[PreparedItem, np.ndarray] = MicroBatcher(
            self.encoder.encode, max_batch_size, max_batch_wait_s
        )
        # no wait: items that arrive while a transaction syncs go together in the next one
        self.writer: MicroBatcher[PendingWrite, Reply | ServiceError] = MicroBatcher(
            self._write, max_size=ITEMS_PER_TRANSACTION, max_wait_s=0.0
        )
        self.reencoder = Reencoder(encoder, store, bundle_version)

    def start(self) -> None:
        self.batcher.start()
        self.writer.start()
        self.reencoder.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        await self.writer.stop()
        await asyncio.to_thread(self.reencoder.stop)

    async def ingest(self, item_id: str, fields: Mapping[str, str], image: bytes, replace: bool,
                     once: IdempotentRequest | None = None) -> Reply:
        """Encode, persist and index one item (201 and an `Ingested` body); `Conflict` when it
        exists and `replace` is off."""
        self._check_absent(item_id, replace)  # early, to spare the encoders; the store decides
        prepared = await asyncio.to_thread(self._prepare, fields, image)
        vector = await self.batcher.submit(prepared)
        stored = StoredItem(item_id, dict(fields), vector, self.bundle_version, datetime.now(UTC), image)
        with self.metrics.timed("store"):
            write = ItemWrite(stored, item_id in self._bundle_ids, replace)
            reply = await self.writer.submit(PendingWrite(write, once))
        if isinstance(reply, ServiceError):
            raise reply
        return reply

    async def get(self, item_id: str) -> ItemInfo:
        row = self.index.row_of(item_id)
        if row is None:
            raise NotFound(f"item {item_id!r} is not in the catalog")
        stored = await asyncio.to_thread(self.store.get_item, item_id)
        vector = self.index.vectors([row])[0]
        fields, weights = self.catalog.fields.get(row), self.catalog.view_weights(row)
        if stored is None:
            return ItemInfo(item_id, "bundle", fields, weights, None, vector)
        return ItemInfo(item_id, "ingested", fields, weights, stored.created_at, vector)

    async def image(self, item_id: str) -> bytes:
        """The stored image of an ingested item, or the bundle's thumbnail of a bundle item."""
        if self.index.row_of(item_id) is None:
            raise NotFound(f"item {item_id!r} is not in the catalog")
        image = await asyncio.to_thread(self.store.image, item_id)
        bundle_row = self._bundle_ids.row(item_id)
        if image is None and bundle_row is not None and self.thumbnails is not None:
            image = self.thumbnails.get(bundle_row)
        if image is None:
            raise NotFound(f"item {item_id!r} has no image here (a bundle exported with --no-thumbnails "
                           "keeps none of its items')")
        return image

    async def delete(self, item_id: str, once: IdempotentRequest | None = None) -> Reply:
        """Withdraw an item: it is no longer recommended (200 and a `Withdrawn` body)."""
        with self.metrics.timed("store"):
            return await asyncio.to_thread(self._delete, item_id, once)

    def _write(self, pending: list[PendingWrite]) -> list[Reply | ServiceError]:
        """One transaction for the batch; per item its reply, or the error that kept it out."""
        self.metrics.store_batch_size.observe(len(pending))
        size = self.index.size
        results: list[Reply | ServiceError] = []
        with self.store.transaction() as tx:
            for entry in pending:
                try:
                    reply = tx.once(entry.once, partial(self._put, tx, entry.write, size))
                except ServiceError as exc:
                    results.append(exc)
                    continue
                if not reply.replayed:
                    size = reply.body["index_size"]
                results.append(reply)
        return results

    def _put(self, tx: WriteTransaction, write: ItemWrite, index_size: int) -> Reply:
        replaced = tx.put_item(write)
        if isinstance(replaced, Conflict):
            raise replaced
        size = index_size if replaced else index_size + 1
        return Reply(201, asdict(Ingested(write.item.item_id, size, self.bundle_version, replaced)))

    def _delete(self, item_id: str, once: IdempotentRequest | None) -> Reply:
        with self.store.transaction() as tx:
            return tx.once(once, partial(self._withdraw, tx, item_id))

    def _withdraw(self, tx: WriteTransaction, item_id: str) -> Reply:
        tx.delete_item(item_id, item_id in self._bundle_ids)
        return Reply(200, asdict(Withdrawn(item_id, self.index.size - 1, self.bundle_version)))

    def _prepare(self, fields: Mapping[str, str], image: bytes) -> PreparedItem:
        return self.encoder.prepare(fields, self.encoder.decode(image))

    def _check_absent(self, item_id: str, replace: bool) -> None:
        if not replace and self.index.row_of(item_id) is not None:
            raise Conflict(f"item {item_id!r} already exists; send replace=true to replace it")
