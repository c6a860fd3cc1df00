"""What the encoders make of one item, and the CLIP-space vector that search ranks it by.

An item's *encoding* under a bundle is four arrays: its item vector (the recommender's space,
`dims.item` wide), its CLIP image embedding and its fused-text embedding (the CLIP space,
`dims.image` wide, each L2-normalised) and the weight of each text view in the fusion (the item
tower's second output). The offline export computes them for the catalog, the service for each
ingested item, with the same functions here, so both agree bit for bit on the same inputs.

The store keeps an encoding as one float32 row, the four arrays side by side (`pack`/`unpack`),
so its logs and re-encodings carry it whole.

Search ranks an item by the mean of two cosines, the query's with the item's image and with its
fused text: `search_vector` is the mean of the two unit embeddings, so its inner product with a
unit query is exactly that mean.
"""

from dataclasses import dataclass

import numpy as np

from cliper.manifest import Manifest


@dataclass(frozen=True)
class EncodingLayout:
    """The widths of an encoding's parts: item vector, CLIP embedding, number of views."""

    item: int
    clip: int
    views: int

    @classmethod
    def of(cls, manifest: Manifest) -> "EncodingLayout":
        """The layout of the encodings of a bundle's model."""
        return cls(manifest.dims.item, manifest.dims.image, len(manifest.views.view_names))

    @property
    def width(self) -> int:
        return self.item + 2 * self.clip + self.views


@dataclass
class ItemEncoding:
    """One item's (or a batch's, with a leading axis) encoding; see the module docstring."""

    vector: np.ndarray
    clip_image: np.ndarray
    clip_text: np.ndarray
    view_weights: np.ndarray

    def pack(self) -> np.ndarray:
        """The four parts side by side, float32."""
        parts = (self.vector, self.clip_image, self.clip_text, self.view_weights)
        return np.concatenate([np.asarray(part, dtype=np.float32) for part in parts], axis=-1)

    @classmethod
    def unpack(cls, packed: np.ndarray, layout: EncodingLayout) -> "ItemEncoding":
        """The parts of a packed encoding; `ValueError` when its width does not fit `layout`."""
        packed = np.asarray(packed, dtype=np.float32)
        if packed.shape[-1] != layout.width:
            raise ValueError(f"an encoding of width {packed.shape[-1]} does not fit {layout} ({layout.width} wide)")
        bounds = np.cumsum([layout.item, layout.clip, layout.clip])
        vector, image, text, weights = np.split(packed, bounds, axis=-1)
        return cls(vector, image, text, weights)

    @property
    def search_vector(self) -> np.ndarray:
        return search_vectors(self.clip_image, self.clip_text)


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero), float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def fused_text(text_views: np.ndarray, view_weights: np.ndarray) -> np.ndarray:
    """`(B, V, D)` view embeddings and `(B, V)` weights -> `(B, D)` unit fused-text embeddings:
    the weighted sum of the views, as the item tower fuses them, normalised."""
    views = np.asarray(text_views, dtype=np.float32)
    weights = np.asarray(view_weights, dtype=np.float32)
    return unit(np.einsum("bv,bvd->bd", weights, views))


def encode_clip(image_features: np.ndarray, text_views: np.ndarray,
                view_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unit CLIP image and fused-text embeddings of a batch."""
    return unit(image_features), fused_text(text_views, view_weights)


def search_vectors(clip_image: np.ndarray, clip_text: np.ndarray) -> np.ndarray:
    """What the CLIP index holds per item: the mean of its unit image and text embeddings."""
    return ((np.asarray(clip_image, dtype=np.float32) + np.asarray(clip_text, dtype=np.float32)) / 2).astype(
        np.float32
    )
