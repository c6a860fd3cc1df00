"""A synthetic interaction set with the shape of a real one, for measuring training cost at scale.

`ScaleConfig`'s defaults are Amazon-Clothing as MMRec ships it (5-core): 39,387 users, 23,033
items, 278,677 interactions; `factor` multiplies all three (10: 393,870, 230,330, 2,786,770). The
counts are exact, no (user, item) pair repeats, and every user and item has at least 5
interactions, so the random split's 5-core filter keeps them all.

Degrees are long-tailed as in the real data: every user and item has 5 interactions plus a
multinomial share of the rest with Zipf weights (rank^-exponent, ranks shuffled over the ids).
With the default exponents most users have 5 to 10 interactions and a few have hundreds; the
most popular items have about a thousand and the median item about 8. Users and items belong to
`clusters`; a share `affinity` of a user's interactions go to items of its own cluster. The two
degree sequences are matched exactly: every interaction slot ("stub") of an item is placed on a
line at its cluster, a user's at its cluster or, for the other share, anywhere; stubs are paired
in order along the line, then a repeated pair swaps its item with a random other pair's until
all pairs are distinct (degrees stay as drawn).

Content has the same clusters: every item has a latent unit vector near its cluster's centroid;
its image and each text view (the `products` views, global last) are that vector plus noise of
their own, unit-normed. They are written as a features folder (`features/`: `text_views.npy`
(V, N, D), `image.npy` (N, D), `items.json`), as `python -m offline features` writes them, so
`ContentFeatures.load` and `python -m offline train` read them directly. The catalog is a generic
folder: `items.csv` with the `products` text columns and no images, `interactions.csv` without
timestamps (so `auto` picks MMRec's random split).
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap
from pydantic import Field, model_validator

from cliper.views import load_views
from offline.config import StrictModel
from offline.data.catalog import INTERACTIONS_FILE, ITEMS_FILE
from offline.models.features import IMAGE_FILE, ITEMS_FILE as FEATURE_ITEMS_FILE, TEXT_FILE

MIN_DEGREE = 5  # MMRec's 5-core: every user and item keeps at least this many interactions
FEATURES_DIR = "features"
FEATURE_BLOCK = 16_384  # items per block of feature rows written at once
MAX_REPAIR_ROUNDS = 1_000


class ScaleConfig(StrictModel):
    """Counts (before `factor`), tails, clusters and content of a scale world."""

    users: int = Field(39_387, ge=2 * MIN_DEGREE)
    items: int = Field(23_033, ge=2 * MIN_DEGREE)
    interactions: int = Field(278_677, ge=1)
    factor: int = Field(1, ge=1, description="multiplies users, items and interactions")
    user_exponent: float = Field(0.5, ge=0, description="Zipf exponent of the users' extra interactions")
    item_exponent: float = Field(0.6, ge=0, description="Zipf exponent of the items' popularity")
    clusters: int = Field(20, ge=1)
    affinity: float = Field(0.8, ge=0, le=1, description="share of a user's interactions in its own cluster")
    dim: int = Field(256, ge=1, description="image and text feature size (cliper-minilm's embed_dim)")
    noise: float = Field(0.5, ge=0, description="norm of the noise added to a unit vector at each level")
    seed: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        """(users, items, interactions) after `factor`."""
        return self.users * self.factor, self.items * self.factor, self.interactions * self.factor

    @model_validator(mode="after")
    def _feasible(self) -> "ScaleConfig":
        users, items, interactions = self.shape
        least = MIN_DEGREE * max(users, items)
        if interactions < least:
            raise ValueError(
                f"{interactions} interactions cannot give each of {users} users and {items} items "
                f"{MIN_DEGREE}; use at least {least}"
            )
        most = min(users * (items // 2), items * (users // 2))
        if interactions > most:
            raise ValueError(
                f"{interactions} interactions exceed {most}: no user may have more than half the items "
                "(nor an item more than half the users); use fewer interactions or more users and items"
            )
        return self


@dataclass
class ScaleReport:
    out: Path
    users: int
    items: int
    interactions: int
    user_degrees: np.ndarray
    item_degrees: np.ndarray
    seconds: float

    def __str__(self) -> str:
        def tail(degrees: np.ndarray) -> str:
            quartiles = "/".join(str(int(q)) for q in np.percentile(degrees, [50, 90, 99]))
            return f"min {degrees.min()}, median/p90/p99 {quartiles}, max {degrees.max()}"

        return (
            f"{self.out}: {self.users} users, {self.items} items, {self.interactions} interactions "
            f"in {self.seconds:.1f} s; per user: {tail(self.user_degrees)}; per item: {tail(self.item_degrees)}"
        )


def long_tail_degrees(n: int, total: int, exponent: float, cap: int, rng: np.random.Generator) -> np.ndarray:
    """`n` degrees in [MIN_DEGREE, cap] that sum to `total`: the minimum each, the rest spread
    by Zipf weights over shuffled ranks; what a cap cuts off goes to the others by their room."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    weights = weights[rng.permutation(n)]
    degrees = MIN_DEGREE + rng.multinomial(total - MIN_DEGREE * n, weights / weights.sum())
    while (over := np.maximum(degrees - cap, 0)).any():
        degrees -= over
        room = (cap - degrees).astype(np.float64)
        degrees += rng.multinomial(over.sum(), room / room.sum())
    return degrees


def _match(
    user_degrees: np.ndarray,
    item_degrees: np.ndarray,
    user_clusters: np.ndarray,
    item_clusters: np.ndarray,
    clusters: int,
    affinity: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """`[user, item]` pairs with these degrees: stubs placed on a line by cluster, paired in order."""
    users = np.repeat(np.arange(len(user_degrees)), user_degrees)
    items = np.repeat(np.arange(len(item_degrees)), item_degrees)
    item_keys = item_clusters[items] + rng.random(len(items))
    own = rng.random(len(users)) < affinity
    user_keys = np.where(
        own, user_clusters[users] + rng.random(len(users)), rng.random(len(users)) * clusters
    )
    return np.column_stack([users[np.argsort(user_keys)], items[np.argsort(item_keys)]])


def _make_distinct(pairs: np.ndarray, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Swap the item of every repeated pair with a random other pair's until no pair repeats
    (in place; each user's and item's count stays the same)."""
    for _ in range(MAX_REPAIR_ROUNDS):
        keys = pairs[:, 0] * n_items + pairs[:, 1]
        order = np.argsort(keys, kind="stable")
        repeated = order[1:][keys[order[1:]] == keys[order[:-1]]]
        if len(repeated) == 0:
            return pairs
        partners = rng.integers(0, len(pairs), len(repeated))
        _, first = np.unique(partners, return_index=True)
        usable = np.zeros(len(partners), dtype=bool)
        usable[first] = True  # each partner once, and never itself a repeated pair
        usable &= ~np.isin(partners, repeated)
        mine, theirs = repeated[usable], partners[usable]
        pairs[mine, 1], pairs[theirs, 1] = pairs[theirs, 1], pairs[mine, 1]
    raise RuntimeError(f"repeated pairs remain after {MAX_REPAIR_ROUNDS} rounds of swaps; lower the exponents")


def scale_interactions(cfg: ScaleConfig) -> tuple[np.ndarray, np.ndarray]:
    """Distinct `[user, item]` pairs sorted by user then item, and each item's cluster."""
    users, items, interactions = cfg.shape
    degree_rng, cluster_rng, match_rng = (
        np.random.default_rng(seed) for seed in np.random.SeedSequence(cfg.seed).spawn(3)
    )
    user_degrees = long_tail_degrees(users, interactions, cfg.user_exponent, items // 2, degree_rng)
    item_degrees = long_tail_degrees(items, interactions, cfg.item_exponent, users // 2, degree_rng)
    user_clusters = cluster_rng.integers(0, cfg.clusters, users)
    item_clusters = cluster_rng.integers(0, cfg.clusters, items)
    pairs = _match(user_degrees, item_degrees, user_clusters, item_clusters, cfg.clusters, cfg.affinity, match_rng)
    pairs = _make_distinct(pairs, items, match_rng)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))], item_clusters


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _noisy(x: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors of `x` plus a random direction of norm `noise`."""
    return _unit(x + noise * _unit(rng.standard_normal(x.shape, dtype=np.float32)))


def write_scale_features(folder: Path, cfg: ScaleConfig, item_ids: list[str], item_clusters: np.ndarray) -> Path:
    """The features folder: image and per-view text vectors with the items' cluster structure,
    written block by block into memory-mapped `.npy` files (about 1.4 GB at 10x and 256-d)."""
    folder.mkdir(parents=True, exist_ok=True)
    views = load_views("products").view_names
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(4)[3])
    centroids = _unit(rng.standard_normal((cfg.clusters, cfg.dim), dtype=np.float32))
    n = len(item_ids)
    image = open_memmap(folder / IMAGE_FILE, mode="w+", dtype=np.float32, shape=(n, cfg.dim))
    text = open_memmap(folder / TEXT_FILE, mode="w+", dtype=np.float32, shape=(len(views), n, cfg.dim))
    for start in range(0, n, FEATURE_BLOCK):
        rows = slice(start, min(start + FEATURE_BLOCK, n))
        latent = _noisy(centroids[item_clusters[rows]], cfg.noise, rng)
        image[rows] = _noisy(latent, cfg.noise, rng)
        for view in range(len(views)):
            text[view, rows] = _noisy(latent, cfg.noise, rng)
    image.flush()
    text.flush()
    meta = {"item_ids": item_ids, "views": views, "synthetic": "scale", "config": cfg.model_dump()}
    (folder / FEATURE_ITEMS_FILE).write_text(json.dumps(meta), encoding="utf-8")
    return folder


def generate_scale(out: Path, cfg: ScaleConfig) -> ScaleReport:
    """Write the catalog (`items.csv`, `interactions.csv`) and `features/` into `out`."""
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    users, items, _ = cfg.shape
    pairs, item_clusters = scale_interactions(cfg)
    item_ids = [f"i{item}" for item in range(items)]
    catalog = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"Item {item}" for item in range(items)],
            "brand": [f"Brand {cluster}" for cluster in item_clusters],
            "categories": [f"Clothing|Cluster {cluster}" for cluster in item_clusters],
            "description": "",
            "image_path": "",
        }
    )
    catalog.to_csv(out / ITEMS_FILE, index=False)
    pd.DataFrame(
        {"user_id": "u" + pd.Series(pairs[:, 0]).astype(str), "item_id": "i" + pd.Series(pairs[:, 1]).astype(str)}
    ).to_csv(out / INTERACTIONS_FILE, index=False)
    write_scale_features(out / FEATURES_DIR, cfg, item_ids, item_clusters)
    return ScaleReport(
        out=out,
        users=users,
        items=items,
        interactions=len(pairs),
        user_degrees=np.bincount(pairs[:, 0], minlength=users),
        item_degrees=np.bincount(pairs[:, 1], minlength=items),
        seconds=time.perf_counter() - started,
    )
