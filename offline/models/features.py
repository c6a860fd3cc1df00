"""Load a features folder (`RUN/features/`) and align it to a split's items by `item_id`."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cliper.views import GLOBAL_VIEW

TEXT_FILE = "text_views.npy"
IMAGE_FILE = "image.npy"
ITEMS_FILE = "items.json"


class FeaturesError(ValueError):
    """A features folder that cannot be used for a split, with what to fix."""


@dataclass(frozen=True)
class ContentFeatures:
    """Frozen CLIP features in split order: `image (n_items, Di)`, `text_views (n_items, V, Dt)`."""

    image: Tensor
    text_views: Tensor
    views: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.image.ndim != 2 or self.text_views.ndim != 3:
            raise FeaturesError(
                f"expected image (N, Di) and text_views (N, V, Dt), got {tuple(self.image.shape)} "
                f"and {tuple(self.text_views.shape)}"
            )
        if self.image.shape[0] != self.text_views.shape[0]:
            raise FeaturesError(
                f"image has {self.image.shape[0]} items but text_views has {self.text_views.shape[0]}"
            )
        if len(self.views) != self.text_views.shape[1]:
            raise FeaturesError(f"{len(self.views)} view names for {self.text_views.shape[1]} text views")

    @property
    def n_items(self) -> int:
        return self.image.shape[0]

    @property
    def image_dim(self) -> int:
        return self.image.shape[1]

    @property
    def text_dim(self) -> int:
        return self.text_views.shape[2]

    @property
    def has_global(self) -> bool:
        return self.views[-1] == GLOBAL_VIEW

    def without_view(self, name: str) -> "ContentFeatures":
        """The same features with one view removed (the per-view ablation)."""
        if name not in self.views:
            raise FeaturesError(f"no view {name!r}; views are {list(self.views)}")
        if len(self.views) == 1:
            raise FeaturesError("cannot drop the only view")
        keep = [i for i, view in enumerate(self.views) if view != name]
        return ContentFeatures(self.image, self.text_views[:, keep], tuple(self.views[i] for i in keep))

    @classmethod
    def load(cls, folder: Path, item_ids: Sequence[str]) -> "ContentFeatures":
        """Read `folder` and reorder its rows to `item_ids` (a split's items)."""
        folder = Path(folder)
        meta_path = folder / ITEMS_FILE
        if not meta_path.is_file():
            raise FeaturesError(f"{meta_path} not found; run `python -m offline features` first")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        text = np.load(folder / TEXT_FILE, mmap_mode="r")
        image = np.load(folder / IMAGE_FILE, mmap_mode="r")
        feature_ids = [str(item) for item in meta["item_ids"]]
        if text.shape[1] != len(feature_ids) or image.shape[0] != len(feature_ids):
            raise FeaturesError(
                f"{folder}: {len(feature_ids)} item_ids but text_views {text.shape} and image {image.shape}"
            )
        position = {item: row for row, item in enumerate(feature_ids)}
        missing = [item for item in item_ids if item not in position]
        if missing:
            raise FeaturesError(
                f"{folder} has no features for {len(missing)} of the split's {len(item_ids)} items, "
                f"e.g. {missing[:5]}; compute the features on the same catalog"
            )
        rows = np.array([position[item] for item in item_ids], dtype=np.int64)
        text_views = np.ascontiguousarray(np.asarray(text[:, rows]).transpose(1, 0, 2), dtype=np.float32)
        return cls(
            image=torch.from_numpy(np.asarray(image[rows], dtype=np.float32)),
            text_views=torch.from_numpy(text_views),
            views=tuple(meta["views"]),
        )
