"""A tiny recommendation world with planted structure, for the backbone and training tests.

Users and items belong to clusters; a user picks most items from its own cluster, and an item's
image and text views sit near its cluster's centroid. A model that learns anything beats random
ranking by far, and content alone identifies a cold item's cluster.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from offline.data.split import SplitData
from offline.models import ContentFeatures

VIEWS = ("title", "brand", "categories", "description", "global")


@dataclass(frozen=True)
class World:
    n_users: int = 90
    n_items: int = 160
    n_clusters: int = 4
    per_user: int = 24
    in_cluster: float = 0.9
    dim: int = 16
    seed: int = 0

    def item_cluster(self) -> np.ndarray:
        return np.arange(self.n_items) % self.n_clusters

    def interactions(self) -> np.ndarray:
        """`(n, 2)` distinct `[user, item]` pairs with the cluster structure."""
        rng = np.random.default_rng(self.seed)
        clusters = self.item_cluster()
        pairs = []
        for user in range(self.n_users):
            own = np.flatnonzero(clusters == user % self.n_clusters)
            n_own = int(self.per_user * self.in_cluster)
            chosen = set(rng.choice(own, n_own, replace=False).tolist())
            while len(chosen) < self.per_user:
                chosen.add(int(rng.integers(self.n_items)))
            pairs += [(user, item) for item in sorted(chosen)]
        return np.array(pairs, dtype=np.int64)

    def content(self, noise: float = 0.3) -> ContentFeatures:
        """Image and text views near each item's cluster centroid (same dim, CLIP-like)."""
        rng = np.random.default_rng(self.seed + 1)
        centroids = rng.normal(size=(self.n_clusters, self.dim))
        base = centroids[self.item_cluster()]
        image = base + noise * rng.normal(size=base.shape)
        views = np.stack([base + noise * (1 + v) * rng.normal(size=base.shape) for v in range(len(VIEWS))], axis=1)
        image, views = (torch.from_numpy(array.astype(np.float32)) for array in (image, views))
        return ContentFeatures(image, views, VIEWS)

    def split(self, cold_share: float = 0.2) -> SplitData:
        """The last `cold_share` of the items are cold; each user's warm pairs go 80/10/10."""
        rng = np.random.default_rng(self.seed + 2)
        pairs = self.interactions()
        n_warm = self.n_items - int(self.n_items * cold_share)
        cold = pairs[:, 1] >= n_warm
        parts: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
        for user in range(self.n_users):
            own = pairs[(pairs[:, 0] == user) & ~cold]
            own = own[rng.permutation(len(own))]
            n_eval = max(1, len(own) // 10)
            parts["test"].append(own[:n_eval])
            parts["valid"].append(own[n_eval : 2 * n_eval])
            parts["train"].append(own[2 * n_eval :])
        return SplitData(
            user_ids=[f"u{user}" for user in range(self.n_users)],
            item_ids=[f"i{item}" for item in range(self.n_items)],
            cold_test=pairs[cold],
            cold_items=np.arange(n_warm, self.n_items, dtype=np.int64),
            **{name: np.concatenate(chunks) for name, chunks in parts.items()},
        )

    def write_catalog(self, root: Path) -> Path:
        """A generic catalog folder (products views, no images) with these interactions."""
        root.mkdir(parents=True, exist_ok=True)
        items = pd.DataFrame(
            {
                "item_id": [f"i{item}" for item in range(self.n_items)],
                "title": [f"Item {item}" for item in range(self.n_items)],
                "brand": [f"Brand {cluster}" for cluster in self.item_cluster()],
                "categories": "Things",
                "description": "",
                "image_path": "",
            }
        )
        items.to_csv(root / "items.csv", index=False)
        pairs = self.interactions()
        pd.DataFrame({"user_id": [f"u{u}" for u in pairs[:, 0]], "item_id": [f"i{i}" for i in pairs[:, 1]]}).to_csv(
            root / "interactions.csv", index=False
        )
        return root

    def write_features(self, folder: Path) -> Path:
        """A features folder in the `RUN/features/` layout, rows in reverse item order (so
        loading must align by item_id)."""
        folder.mkdir(parents=True, exist_ok=True)
        content = self.content()
        order = np.arange(self.n_items)[::-1]
        np.save(folder / "text_views.npy", content.text_views.numpy()[order].transpose(1, 0, 2))
        np.save(folder / "image.npy", content.image.numpy()[order])
        meta = {"item_ids": [f"i{item}" for item in order], "views": list(VIEWS)}
        (folder / "items.json").write_text(json.dumps(meta), encoding="utf-8")
        return folder
