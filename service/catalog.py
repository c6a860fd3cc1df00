"""The live catalog: every item's vector, CLIP search vector, view weights and text fields by row.

Two `ItemIndex`es share one row numbering: `items` (the recommender's space: recommendations,
similar items) and `clip` (the CLIP space: search). The bundle's items are rows 0..n-1 of both;
every put (an ingested item, or a replacement) takes the next row of both, and a removal kills
the row in both, so a row found in one names the same item in the other. Beside them, per row:
the item's view weights (explanations) and text fields (filters, `service.filters`).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cliper.bundle import LoadedBundle
from cliper.encoding import EncodingLayout, ItemEncoding
from service.filters import ItemFields
from service.index import IndexState, ItemIndex


@dataclass
class CatalogState:
    """An `ItemCatalog` at one moment, for a snapshot: both indexes' states, every row's view
    weights and the fields of the rows added after the bundle's."""

    items: IndexState
    clip: IndexState
    view_weights: np.ndarray
    ingested_fields: dict[int, dict[str, str]]


class ItemCatalog:
    """The two indexes and the per-row weights and fields, changed together (module docstring)."""

    def __init__(self, items: ItemIndex, clip: ItemIndex, view_weights: np.ndarray, fields: ItemFields,
                 layout: EncodingLayout, view_names: Sequence[str]) -> None:
        if not items.n_rows == clip.n_rows == len(view_weights) == fields.n_rows:
            raise ValueError(f"catalog parts disagree on the rows: items {items.n_rows}, clip {clip.n_rows}, "
                             f"weights {len(view_weights)}, fields {fields.n_rows}")
        self.items = items
        self.clip = clip
        self.fields = fields
        self.layout = layout
        self.view_names = list(view_names)
        self._weights = np.array(view_weights, dtype=np.float32)

    @classmethod
    def from_bundle(cls, bundle: LoadedBundle, threads: int) -> "ItemCatalog":
        manifest = bundle.manifest
        items = ItemIndex(bundle.index, bundle.item_ids, bundle.item_vectors, threads)
        search = ItemEncoding(bundle.item_vectors, bundle.clip_image, bundle.clip_text, bundle.view_weights)
        clip = ItemIndex(bundle.clip_index, bundle.item_ids, search.search_vector, threads)
        return cls(items, clip, bundle.view_weights, ItemFields(manifest.views, bundle.item_fields),
                   EncodingLayout.of(bundle.manifest), manifest.views.view_names)

    @classmethod
    def restore(cls, bundle: LoadedBundle, state: CatalogState, threads: int) -> "ItemCatalog":
        """The catalog `state` was taken from."""
        fields = ItemFields(bundle.manifest.views, bundle.item_fields, state.ingested_fields)
        return cls(ItemIndex.restore(state.items, threads), ItemIndex.restore(state.clip, threads),
                   state.view_weights, fields, EncodingLayout.of(bundle.manifest), bundle.manifest.views.view_names)

    def state(self) -> CatalogState:
        """A copy for a snapshot (call it on the thread that changes the catalog)."""
        return CatalogState(self.items.state(), self.clip.state(), self._weights[: self.items.n_rows].copy(),
                            self.fields.ingested_state())

    def put(self, item_id: str, packed: np.ndarray, fields: Mapping[str, str]) -> int:
        """Add or replace an item from its packed encoding (`cliper.encoding`); its new row."""
        encoding = ItemEncoding.unpack(packed, self.layout)
        row, _ = self.items.put(item_id, encoding.vector)
        clip_row, _ = self.clip.put(item_id, encoding.search_vector)
        if clip_row != row:
            raise RuntimeError(f"the CLIP index put {item_id!r} at row {clip_row}, the item index at {row}")
        if row >= len(self._weights):
            grown = np.zeros((max(row + 1, 2 * len(self._weights)), self.layout.views), dtype=np.float32)
            grown[: len(self._weights)] = self._weights
            self._weights = grown
        self._weights[row] = encoding.view_weights
        self.fields.put(row, fields)
        return row

    def remove(self, item_id: str) -> bool:
        """Withdraw an item from both indexes; False when it was not live."""
        self.clip.remove(item_id)
        return self.items.remove(item_id)

    def view_weights(self, row: int) -> dict[str, float]:
        """An item's weight per view, summing to 1."""
        weights = self._weights[row].astype(np.float64)
        total = weights.sum()
        weights = weights / total if total > 0 else np.full(len(weights), 1 / len(weights))
        return {name: float(weight) for name, weight in zip(self.view_names, weights, strict=True)}
