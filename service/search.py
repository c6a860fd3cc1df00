"""Similar items and search: the catalog asked by an item's vector or by a query in CLIP space.

`similar` ranks the items by the inner product of their vectors with one item's vector (the
recommender's space; an item ingested a second ago has its content vector there at once).
`search` embeds a text, an image or both with the bundle's CLIP encoders (both: the mean of the
two unit embeddings, normalised) and ranks the items by the inner product with their search
vectors, that is the mean of the query's cosines with the item's image and its fused text
(`cliper.encoding`).

With a `user_id` that has a vector, search blends in the user's model score: the best
`BLEND_POOL` items by CLIP score (at least 4k) are re-ranked by
`(1 - w) * z(clip score) + w * z(user score)`, each score standardised (z-score) over that pool so
that neither scale dominates; `w` is `user_weight` (default `DEFAULT_USER_WEIGHT`). w = 0 keeps the
CLIP order and w = 1 orders the pool by the user's taste alone.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from service.catalog import ItemCatalog
from service.encoders import ItemEncoder
from service.errors import NotFound
from service.metrics import Metrics
from service.selection import Selection

DEFAULT_USER_WEIGHT = 0.3
BLEND_POOL = 200


@dataclass
class Hit:
    row: int
    item_id: str
    score: float
    clip_score: float | None = None
    user_score: float | None = None


async def run_search(offload: bool, metrics: Metrics, search: Callable[..., tuple[np.ndarray, np.ndarray]],
                     *args: Any) -> tuple[np.ndarray, np.ndarray]:
    """`search(*args)`, on a thread where a spare core or a GPU can overlap the event loop."""
    with metrics.timed("search"):
        if offload:
            return await asyncio.to_thread(search, *args)
        return search(*args)


class CatalogSearch:
    """Similar items and CLIP search over the live catalog (module docstring)."""

    def __init__(self, catalog: ItemCatalog, encoder: ItemEncoder, metrics: Metrics, offload: bool) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self.metrics = metrics
        self.offload = offload

    async def similar(self, item_id: str, k: int, selection: Selection) -> list[Hit]:
        """The k items most like `item_id` (itself left out) among the selected ones."""
        index = self.catalog.items
        row = index.row_of(item_id)
        if row is None:
            raise NotFound(f"item {item_id!r} is not in the catalog")
        exclude = selection.excluded_rows(self.catalog) | {row}
        query = index.vectors([row])[0]
        rows, scores = await run_search(self.offload, self.metrics, index.search_filtered, query, k,
                                        selection.allowed(self.catalog), exclude)
        return self._hits(index.item_id, rows, scores)

    async def search(self, text: str | None, image: Image.Image | None, k: int, selection: Selection,
                     user_vector: np.ndarray | None = None, user_weight: float = DEFAULT_USER_WEIGHT) -> list[Hit]:
        """The k items nearest the query in CLIP space, optionally blended with a user's scores."""
        query = await asyncio.to_thread(self._embed, text, image)
        clip = self.catalog.clip
        pool = k if user_vector is None else max(BLEND_POOL, 4 * k)
        rows, scores = await run_search(self.offload, self.metrics, clip.search_filtered, query, pool,
                                        selection.allowed(self.catalog), selection.excluded_rows(self.catalog))
        hits = self._hits(clip.item_id, rows, scores)
        for hit in hits:
            hit.clip_score = hit.score
        if user_vector is None or not hits:
            return hits[:k]
        user_scores = self.catalog.items.vectors([hit.row for hit in hits]) @ user_vector
        blended = (1 - user_weight) * _standardised(np.array([hit.score for hit in hits])) \
            + user_weight * _standardised(user_scores)
        for hit, score, user_score in zip(hits, blended.tolist(), user_scores.tolist(), strict=True):
            hit.score, hit.user_score = score, user_score
        return sorted(hits, key=lambda hit: -hit.score)[:k]

    def _embed(self, text: str | None, image: Image.Image | None) -> np.ndarray:
        parts = []
        if text is not None:
            parts.append(self.encoder.embed_text(text))
        if image is not None:
            parts.append(self.encoder.embed_image(image))
        query = np.mean(parts, axis=0)
        return (query / np.linalg.norm(query)).astype(np.float32)

    @staticmethod
    def _hits(item_id: Callable[[int], str], rows: np.ndarray, scores: np.ndarray) -> list[Hit]:
        return [Hit(row, item_id(row), score) for row, score in zip(rows.tolist(), scores.tolist(), strict=True)
                if row >= 0 and np.isfinite(score)]


def _standardised(scores: np.ndarray) -> np.ndarray:
    """Scores as z-scores over the pool (all zero when they do not spread)."""
    spread = scores.std()
    return (scores - scores.mean()) / spread if spread > 0 else np.zeros_like(scores)
