"""Re-encoding items written under another bundle version, once per version for every replica.

During a rolling upgrade replicas on bundle A and on bundle B (a retrained model) serve one
store. An item ingested through either is logged with its own model's vector; a replica never
indexes a vector of another model (`service.follower`), so the other model must encode it too.
It does so from the item's stored image and fields, and logs the result as one more entry of the
item log (`WriteTransaction.add_reencoded`), which every replica on that version applies.

Once per version: a pass holds the store-wide lock of its version (`Store.exclusive`), looks for
the items that still have no vector of it (`Store.items_to_reencode`), encodes them and commits
before letting go; a replica that waited for the lock finds them done. The database refuses a
second vector of one version for one write anyway, and a re-encoding of content that was
replaced or withdrawn meanwhile (the next pass encodes the new content).

A pass runs at start-up, before the replica is ready, and in a background thread whenever the
follower skips a change logged under another version (`request`).
"""

import hashlib
import logging
import threading

from service.encoders import ItemEncoder, PreparedItem
from service.errors import ServiceError
from service.store import Store, StoredItem

log = logging.getLogger(__name__)
ITEMS_PER_BATCH = 32  # items encoded together and written in one transaction


class Reencoder:
    """Encodes the store's items that lack a vector of `bundle_version` with `encoder`."""

    def __init__(self, encoder: ItemEncoder, store: Store, bundle_version: str) -> None:
        self.encoder = encoder
        self.store = store
        self.bundle_version = bundle_version
        self._lock_name = "reencode-" + hashlib.sha256(bundle_version.encode()).hexdigest()[:16]
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def run(self) -> int:
        """One pass; how many items it logged a vector for."""
        with self.store.exclusive(self._lock_name):
            pending = self.store.items_to_reencode(self.bundle_version)
            if pending:
                log.info("re-encoding %d items written under other bundle versions", len(pending))
            logged = 0
            for start in range(0, len(pending), ITEMS_PER_BATCH):
                if self._stopping:
                    break
                logged += self._encode(pending[start : start + ITEMS_PER_BATCH])
            return logged

    def request(self) -> None:
        """Ask the background thread for a pass (cheap; from any thread)."""
        self._wanted.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="reencoder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the batch in progress."""
        self._stopping = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _serve(self) -> None:
        while True:
            self._wanted.wait()
            if self._stopping:
                return
            self._wanted.clear()  # before the pass: a change skipped from now on asks for another
            try:
                self.run()
            except Exception:  # the store unreachable: the next skipped change asks again
                log.exception("could not re-encode items written under other bundle versions")

    def _encode(self, items: list[StoredItem]) -> int:
        prepared: list[tuple[StoredItem, PreparedItem]] = []
        for item in items:
            data = self.store.image(item.item_id)
            if data is None:  # withdrawn since it was listed
                continue
            try:
                prepared.append((item, self.encoder.prepare(item.fields, self.encoder.decode(data))))
            except ServiceError as exc:  # refused by this release's limits: it stays out of this index
                log.warning("item %r cannot be re-encoded: %s", item.item_id, exc)
        if not prepared:
            return 0
        vectors = self.encoder.encode([entry for _, entry in prepared])
        with self.store.transaction() as tx:
            return sum(tx.add_reencoded(item, vector, self.bundle_version)
                       for (item, _), vector in zip(prepared, vectors, strict=True))
