"""The live catalog: every item's vector, CLIP search vector, view weights and text fields by row.

Two `ItemIndex`es share one row numbering: `items` (the recommender's space: recommendations,
similar items) and `clip` (the CLIP space: search). The bundle's items are rows 0..n-1 of both;
every put (an ingested item, or a replacement) takes the next row of both, and a removal kills
the row in both, so a row found in one names the same item in the other. Beside them, per row:
the item's view weights (explanations) and text fields (filters, `service.filters`).

Like the indexes (`service.index`), the per-row parts are the bundle's, memory-mapped and shared
by the worker processes, plus what this process added: the bundle's view weights and a growing
array for the added rows; the CLIP index's vectors of the bundle's rows are computed from its
memory-mapped CLIP embeddings when asked for (`SearchVectors`) instead of being stored.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cliper.bundle import LoadedBundle
from cliper.encoding import EncodingLayout, ItemEncoding, search_vectors
from service.filters import ItemFields
from service.index import IndexState, ItemIndex, grow


@dataclass
class CatalogState:
    """An `ItemCatalog` at one moment, for a snapshot: both indexes' states, and the view weights
    and fields of the rows added after the bundle's."""

    items: IndexState
    clip: IndexState
    view_weights: np.ndarray
    ingested_fields: dict[int, dict[str, str]]


class SearchVectors:
    """The bundle items' CLIP search vectors (`cliper.encoding.search_vectors`) by row, computed
    from their memory-mapped CLIP embeddings when asked for: stored, a million items' would take
    256 MB in every worker process."""

    def __init__(self, clip_image: np.ndarray, clip_text: np.ndarray) -> None:
        self._image = clip_image
        self._text = clip_text

    @property
    def shape(self) -> tuple[int, ...]:
        return self._image.shape

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        return search_vectors(self._image[rows], self._text[rows])


class ItemCatalog:
    """The two indexes and the per-row weights and fields, changed together (module docstring)."""

    def __init__(self, items: ItemIndex, clip: ItemIndex, view_weights: np.ndarray, fields: ItemFields,
                 layout: EncodingLayout, view_names: Sequence[str], added_weights: np.ndarray | None = None) -> None:
        """`view_weights`: the bundle's rows' (kept as given: read-only is fine); `added_weights`:
        those of the rows added after them, when restoring a snapshot."""
        added = np.zeros((0, layout.views), dtype=np.float32) if added_weights is None else added_weights
        if not items.n_rows == clip.n_rows == len(view_weights) + len(added) == fields.n_rows:
            raise ValueError(f"catalog parts disagree on the rows: items {items.n_rows}, clip {clip.n_rows}, "
                             f"weights {len(view_weights)} + {len(added)}, fields {fields.n_rows}")
        self.items = items
        self.clip = clip
        self.fields = fields
        self.layout = layout
        self.view_names = list(view_names)
        self._weights = view_weights
        self._added_weights = np.array(added, dtype=np.float32)

    @classmethod
    def from_bundle(cls, bundle: LoadedBundle, threads: int) -> "ItemCatalog":
        items, clip = cls._indexes(bundle, threads)
        return cls(ItemIndex(*items), ItemIndex(*clip), bundle.view_weights,
                   ItemFields(bundle.manifest.views, bundle.item_fields), EncodingLayout.of(bundle.manifest),
                   bundle.manifest.views.view_names)

    @classmethod
    def restore(cls, bundle: LoadedBundle, state: CatalogState, threads: int) -> "ItemCatalog":
        """The catalog `state` was taken from (over the same bundle)."""
        items, clip = cls._indexes(bundle, threads)
        fields = ItemFields(bundle.manifest.views, bundle.item_fields, state.ingested_fields)
        return cls(ItemIndex.restore(state.items, *items), ItemIndex.restore(state.clip, *clip), bundle.view_weights,
                   fields, EncodingLayout.of(bundle.manifest), bundle.manifest.views.view_names, state.view_weights)

    @staticmethod
    def _indexes(bundle: LoadedBundle, threads: int) -> tuple[tuple, tuple]:
        """What the item index and the CLIP index are built on: the bundle's index, ids, vectors."""
        return ((bundle.index, bundle.item_ids, bundle.item_vectors, threads),
                (bundle.clip_index, bundle.item_ids, SearchVectors(bundle.clip_image, bundle.clip_text), threads))

    def state(self) -> CatalogState:
        """A copy for a snapshot (call it on the thread that changes the catalog)."""
        added = self.items.n_rows - len(self._weights)
        return CatalogState(self.items.state(), self.clip.state(), self._added_weights[:added].copy(),
                            self.fields.ingested_state())

    def put(self, item_id: str, packed: np.ndarray, fields: Mapping[str, str]) -> int:
        """Add or replace an item from its packed encoding (`cliper.encoding`); its new row."""
        encoding = ItemEncoding.unpack(packed, self.layout)
        row, _ = self.items.put(item_id, encoding.vector)
        clip_row, _ = self.clip.put(item_id, encoding.search_vector)
        if clip_row != row:
            raise RuntimeError(f"the CLIP index put {item_id!r} at row {clip_row}, the item index at {row}")
        added = row - len(self._weights)
        self._added_weights = grow(self._added_weights, added + 1)
        self._added_weights[added] = encoding.view_weights
        self.fields.put(row, fields)
        return row

    def remove(self, item_id: str) -> bool:
        """Withdraw an item from both indexes; False when it was not live."""
        self.clip.remove(item_id)
        return self.items.remove(item_id)

    def view_weights(self, row: int) -> dict[str, float]:
        """An item's weight per view, summing to 1."""
        bundle = len(self._weights)
        weights = (self._weights[row] if row < bundle else self._added_weights[row - bundle]).astype(np.float64)
        total = weights.sum()
        weights = weights / total if total > 0 else np.full(len(weights), 1 / len(weights))
        return {name: float(weight) for name, weight in zip(self.view_names, weights, strict=True)}
