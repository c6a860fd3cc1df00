"""From a catalog's interactions to integer-id train/valid/test splits plus a cold-item test.

Steps: drop repeated (user, item) pairs (the first one is kept), optionally drop ratings below
`min_rating`, keep the iterative k-core (every user and item with >= k interactions), withhold a
seeded share of the surviving items entirely (their interactions form `cold_test`), then split
each user's remaining interactions at random 80/10/10.

Internal item ids put warm items first (catalog order) and cold items last, so
`item_ids[:n_warm_items]` are exactly the items a model can see in training.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from offline.config import StrictModel
from offline.data.catalog import Catalog, CatalogError

ARRAYS = ("train", "valid", "test", "cold_test", "cold_items")
MIN_FOR_RATIO_SPLIT = 10  # fewer warm interactions than this: n-2 / 1 / 1
MIN_FOR_EVAL = 3  # fewer than this: everything goes to train


class SplitConfig(StrictModel):
    k_core: int = Field(5, ge=1)
    valid_ratio: float = Field(0.1, ge=0, lt=1)
    test_ratio: float = Field(0.1, ge=0, lt=1)
    cold_item_ratio: float = Field(0.2, ge=0, lt=1)
    seed: int = 42
    min_rating: float | None = None


@dataclass
class SplitData:
    """Integer-id interactions: `[user, item]` rows, ids index `user_ids` / `item_ids`."""

    user_ids: list[str]
    item_ids: list[str]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    cold_test: np.ndarray
    cold_items: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_warm_items(self) -> int:
        return self.n_items - len(self.cold_items)

    def summary(self) -> str:
        dropped = ", ".join(f"{name} {count}" for name, count in self.stats.items())
        return (
            f"{self.n_users} users, {self.n_items} items ({self.n_warm_items} warm, "
            f"{len(self.cold_items)} cold); train {len(self.train)}, valid {len(self.valid)}, "
            f"test {len(self.test)}, cold_test {len(self.cold_test)}"
            + (f"; {dropped}" if dropped else "")
        )

    def save(self, folder: Path) -> None:
        """`split.npz` (the arrays) and `split.json` (ids and stats)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "split.npz", **{name: getattr(self, name) for name in ARRAYS})
        meta = {"user_ids": self.user_ids, "item_ids": self.item_ids, "stats": self.stats}
        (folder / "split.json").write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> "SplitData":
        folder = Path(folder)
        for name in ("split.npz", "split.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} not found; write it with SplitData.save")
        meta = json.loads((folder / "split.json").read_text(encoding="utf-8"))
        with np.load(folder / "split.npz") as arrays:
            loaded = {name: arrays[name] for name in ARRAYS}
        return cls(
            user_ids=meta["user_ids"], item_ids=meta["item_ids"], stats=meta["stats"], **loaded
        )

    def to_mmrec_inter(self, path: Path) -> None:
        """MMRec's `.inter` TSV of the warm splits (x_label 0 train, 1 valid, 2 test).

        `cold_test` is not written: MMRec has no cold-item protocol, and its item count is the
        largest item id + 1, which (cold items last) then equals `n_warm_items` when every warm
        item occurs. Interactions are implicit here: rating is 1 and timestamp 0.
        """
        frames = [
            pd.DataFrame(
                {
                    "userID": rows[:, 0],
                    "itemID": rows[:, 1],
                    "rating": 1,
                    "timestamp": 0,
                    "x_label": label,
                }
            )
            for label, rows in enumerate((self.train, self.valid, self.test))
        ]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        pd.concat(frames, ignore_index=True).to_csv(path, sep="\t", index=False)


def split_catalog(catalog: Catalog, cfg: SplitConfig) -> SplitData:
    """Filter the catalog's interactions and split them (see the module docstring)."""
    frame = catalog.interactions
    stats = {"interactions": len(frame)}
    frame = frame.drop_duplicates(["user_id", "item_id"], keep="first")
    stats["duplicates_dropped"] = stats["interactions"] - len(frame)
    if cfg.min_rating is not None:
        if "rating" not in frame.columns:
            raise CatalogError("min_rating is set but the interactions have no rating column")
        before = len(frame)
        frame = frame[frame["rating"] >= cfg.min_rating]
        stats["below_min_rating_dropped"] = before - len(frame)
    before = len(frame)
    frame = k_core(frame, cfg.k_core)
    stats["k_core_dropped"] = before - len(frame)
    if frame.empty:
        raise CatalogError(
            f"no interactions survive the {cfg.k_core}-core filter; lower k_core "
            f"(the catalog has {stats['interactions']} interactions)"
        )
    rng = np.random.default_rng(cfg.seed)
    surviving = catalog.items["item_id"][
        catalog.items["item_id"].isin(set(frame["item_id"]))
    ].tolist()
    n_cold = int(round(cfg.cold_item_ratio * len(surviving)))
    cold_mask = np.zeros(len(surviving), bool)
    cold_mask[rng.choice(len(surviving), n_cold, replace=False)] = True
    item_ids = [i for i, c in zip(surviving, cold_mask) if not c] + [
        i for i, c in zip(surviving, cold_mask) if c
    ]
    user_ids = pd.unique(frame["user_id"]).tolist()
    pairs = np.column_stack(
        [
            pd.Index(user_ids).get_indexer(frame["user_id"]),
            pd.Index(item_ids).get_indexer(frame["item_id"]),
        ]
    ).astype(np.int64)
    n_warm = len(item_ids) - n_cold
    cold = pairs[:, 1] >= n_warm
    labels = _per_user_labels(pairs[~cold, 0], cfg, rng)
    warm = pairs[~cold]
    return SplitData(
        user_ids=user_ids,
        item_ids=item_ids,
        train=_sorted(warm[labels == 0]),
        valid=_sorted(warm[labels == 1]),
        test=_sorted(warm[labels == 2]),
        cold_test=_sorted(pairs[cold]),
        cold_items=np.arange(n_warm, len(item_ids), dtype=np.int64),
        stats=stats,
    )


def k_core(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """The largest subset where every user and every item has at least k interactions."""
    while True:
        user_counts = frame.groupby("user_id")["user_id"].transform("size")
        item_counts = frame.groupby("item_id")["item_id"].transform("size")
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            return frame
        frame = frame[keep]


def _per_user_labels(users: np.ndarray, cfg: SplitConfig, rng: np.random.Generator) -> np.ndarray:
    """0 train / 1 valid / 2 test for each row, a seeded random split within each user."""
    order = np.lexsort((rng.random(len(users)), users))  # by user, random within a user
    counts = np.bincount(users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_users = users[order]
    position = np.arange(len(users)) - starts[sorted_users]
    n = counts[sorted_users]
    small = np.where(n >= MIN_FOR_EVAL, 1, 0)  # 3..9 interactions: one each for valid, test
    n_test = np.where(n >= MIN_FOR_RATIO_SPLIT, np.round(n * cfg.test_ratio), small)
    n_valid = np.where(n >= MIN_FOR_RATIO_SPLIT, np.round(n * cfg.valid_ratio), small)
    labels = np.zeros(len(users), np.int64)
    labels[order] = np.select([position < n_test, position < n_test + n_valid], [2, 1], 0)
    return labels


def _sorted(pairs: np.ndarray) -> np.ndarray:
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))].reshape(-1, 2)
