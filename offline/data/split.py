"""From a catalog's interactions to integer-id splits: an evaluation protocol, or all of them.

Every method first drops repeated (user, item) pairs (the earliest one is kept when there are
timestamps, else the first row), optionally drops ratings below `min_rating`, and keeps the
iterative k-core (every user and item with >= k interactions). Then:

- `random`, the research protocol of MMRec and the paper: a seeded share of the surviving items
  is withheld entirely (their interactions form `cold_test`), and each user's remaining
  interactions are split at random 80/10/10. Defaults: 5-core, 20% cold items.
- `temporal`, what a deployment will see: interactions before a time cut-off train, the next
  `valid_ratio` of them (by time) validate, the last `test_ratio` test. Every catalog item is a
  candidate; items first seen after the first cut-off are new (cold) items, ranked from their
  content. Users first seen after it are new users: they have no model vector, so they are
  ranked by popularity (`new_user_test`). Default: no k-core filter.
- `none`, the refit for deployment: every interaction trains, every catalog item is in the
  split (items nobody interacted with are cold items: their vectors come from content).

`auto` (the default) is `temporal` when the interactions have a `timestamp` column, else
`random`. Internal item ids put warm items first (catalog order) and cold items last, so
`item_ids[:n_warm_items]` are exactly the items a model can see in training; every user in
`user_ids` has at least one training interaction.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from offline.config import ConfigError, StrictModel
from offline.data.catalog import Catalog, CatalogError

ARRAYS = ("train", "valid", "test", "cold_test", "cold_items", "new_user_test")
MIN_FOR_RATIO_SPLIT = 10  # fewer warm interactions than this: n-2 / 1 / 1
MIN_FOR_EVAL = 3  # fewer than this: everything goes to train
RANDOM_DEFAULTS = {"k_core": 5, "cold_item_ratio": 0.2}  # MMRec's protocol
EvaluationSplit = Literal["auto", "temporal", "random"]
SplitMethod = Literal[EvaluationSplit, "none"]


class SplitTooSparse(CatalogError):
    """The interactions cannot support an evaluation split; a refit on all of them still can."""


class SplitConfig(StrictModel):
    method: SplitMethod = "auto"
    k_core: int | None = Field(None, ge=1, description="default: 5 for random, 1 (no filter) otherwise")
    valid_ratio: float = Field(0.1, ge=0, lt=1)
    test_ratio: float = Field(0.1, ge=0, lt=1)
    cold_item_ratio: float | None = Field(
        None, ge=0, lt=1, description="random only: share of items withheld as cold (default 0.2)"
    )
    seed: int = 42
    min_rating: float | None = None

    def resolve(self, catalog: Catalog) -> "SplitConfig":
        """`auto` and unset defaults made concrete for this catalog."""
        method = self.method
        if method == "auto":
            method = "temporal" if "timestamp" in catalog.interactions.columns else "random"
        if method != "random" and self.cold_item_ratio:
            raise ConfigError(
                f"cold_item_ratio applies to the random split only; the {method} split's new items "
                "are the items first seen after its cut-off (pass --split random to withhold a share)"
            )
        defaults = RANDOM_DEFAULTS if method == "random" else {"k_core": 1, "cold_item_ratio": 0.0}
        return self.model_copy(
            update={
                "method": method,
                "k_core": self.k_core if self.k_core is not None else defaults["k_core"],
                "cold_item_ratio": (
                    self.cold_item_ratio if self.cold_item_ratio is not None else defaults["cold_item_ratio"]
                ),
            }
        )


def _no_pairs() -> np.ndarray:
    return np.zeros((0, 2), dtype=np.int64)


@dataclass
class SplitData:
    """Integer-id interactions: `[user, item]` rows, ids index `user_ids` / `item_ids`.

    `new_user_test` rows are `[new user, item]`, the user indexing `new_user_ids`: users with
    test interactions but none in training (temporal split only).
    """

    user_ids: list[str]
    item_ids: list[str]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    cold_test: np.ndarray
    cold_items: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)
    method: str = "random"
    new_user_ids: list[str] = field(default_factory=list)
    new_user_test: np.ndarray = field(default_factory=_no_pairs)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_warm_items(self) -> int:
        return self.n_items - len(self.cold_items)

    @property
    def evaluable(self) -> bool:
        """Whether there is something to validate and test on (false for a refit)."""
        return len(self.valid) > 0 and len(self.test) > 0

    def summary(self) -> str:
        dropped = ", ".join(f"{name} {count}" for name, count in self.stats.items())
        new_users = f", {len(self.new_user_ids)} new users (test {len(self.new_user_test)})" if self.new_user_ids else ""
        return (
            f"{self.method} split: {self.n_users} users, {self.n_items} items ({self.n_warm_items} warm, "
            f"{len(self.cold_items)} cold); train {len(self.train)}, valid {len(self.valid)}, "
            f"test {len(self.test)}, cold_test {len(self.cold_test)}{new_users}"
            + (f"; {dropped}" if dropped else "")
        )

    def save(self, folder: Path) -> None:
        """`split.npz` (the arrays) and `split.json` (ids, method and stats)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "split.npz", **{name: getattr(self, name) for name in ARRAYS})
        meta = {
            "method": self.method,
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            "new_user_ids": self.new_user_ids,
            "stats": self.stats,
        }
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
            user_ids=meta["user_ids"],
            item_ids=meta["item_ids"],
            stats=meta["stats"],
            method=meta["method"],
            new_user_ids=meta["new_user_ids"],
            **loaded,
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
    """Filter the catalog's interactions and split them (see the module docstring).

    Raises `SplitTooSparse` when the chosen evaluation protocol leaves nothing to train, validate
    or test on (`method="none"` only needs one interaction).
    """
    cfg = cfg.resolve(catalog)
    frame, stats = filtered_interactions(catalog, cfg)
    if frame.empty:
        raise SplitTooSparse(
            f"no interactions survive the {cfg.k_core}-core filter; lower k_core "
            f"(the catalog has {stats['interactions']} interactions)"
        )
    split = {"random": _random_split, "temporal": _temporal_split, "none": _all_interactions}[cfg.method](
        catalog, frame, cfg, stats
    )
    if cfg.method != "none" and not split.evaluable:
        raise SplitTooSparse(
            f"the {cfg.method} split leaves nothing to evaluate on ({split.summary()}): too few interactions "
            "by users who also have earlier ones"
        )
    return split


def filtered_interactions(catalog: Catalog, cfg: SplitConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """The interactions after dedup, `min_rating` and the k-core filter, with what each dropped
    (`cfg` resolved; a temporal split's come in time order, `timestamp` as int64)."""
    frame = catalog.interactions
    stats = {"interactions": len(frame)}
    if cfg.method == "temporal":
        frame = frame.assign(timestamp=interaction_times(frame)).sort_values("timestamp", kind="stable")
    frame = frame.drop_duplicates(["user_id", "item_id"], keep="first")
    stats["duplicates_dropped"] = stats["interactions"] - len(frame)
    if cfg.min_rating is not None:
        if "rating" not in frame.columns:
            raise CatalogError("min_rating is set but the interactions have no rating column")
        before = len(frame)
        frame = frame[frame["rating"] >= cfg.min_rating]
        stats["below_min_rating_dropped"] = before - len(frame)
    if cfg.k_core > 1:
        before = len(frame)
        frame = k_core(frame, cfg.k_core)
        stats["k_core_dropped"] = before - len(frame)
    return frame, stats


def interaction_times(frame: pd.DataFrame) -> pd.Series:
    """The `timestamp` column as int64 (numbers as they are, dates as epoch seconds)."""
    if "timestamp" not in frame.columns:
        raise CatalogError("the temporal split needs a timestamp column in interactions.csv; pass --split random")
    column = frame["timestamp"]
    if pd.api.types.is_numeric_dtype(column) and not column.isna().any():
        return column.astype(np.int64)
    try:
        return (pd.to_datetime(column, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    except (ValueError, TypeError) as exc:
        raise CatalogError(
            f"interactions.csv: the timestamp column must hold numbers or dates everywhere ({exc})"
        ) from exc


def _pairs(frame: pd.DataFrame, user_ids: list[str], item_ids: list[str]) -> np.ndarray:
    return np.column_stack(
        [pd.Index(user_ids).get_indexer(frame["user_id"]), pd.Index(item_ids).get_indexer(frame["item_id"])]
    ).astype(np.int64).reshape(-1, 2)


def _warm_then_cold(catalog: Catalog, warm: set[str], cold: set[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Item ids: the `warm` ones, then the `cold` ones (default: every other catalog item), both
    in catalog order; and the cold items' ids."""
    catalog_ids = catalog.items["item_id"].tolist()
    warm_ids = [item for item in catalog_ids if item in warm]
    cold_ids = [item for item in catalog_ids if (item in cold if cold is not None else item not in warm)]
    return warm_ids + cold_ids, np.arange(len(warm_ids), len(warm_ids) + len(cold_ids), dtype=np.int64)


def _random_split(catalog: Catalog, frame: pd.DataFrame, cfg: SplitConfig, stats: dict[str, int]) -> SplitData:
    rng = np.random.default_rng(cfg.seed)
    surviving = catalog.items["item_id"][catalog.items["item_id"].isin(set(frame["item_id"]))].tolist()
    n_cold = int(round(cfg.cold_item_ratio * len(surviving)))
    cold_mask = np.zeros(len(surviving), bool)
    cold_mask[rng.choice(len(surviving), n_cold, replace=False)] = True
    item_ids, cold_items = _warm_then_cold(
        catalog,
        {item for item, cold in zip(surviving, cold_mask) if not cold},
        {item for item, cold in zip(surviving, cold_mask) if cold},
    )
    user_ids = pd.unique(frame["user_id"]).tolist()
    pairs = _pairs(frame, user_ids, item_ids)
    cold = pairs[:, 1] >= len(item_ids) - n_cold
    labels = _per_user_labels(pairs[~cold, 0], cfg, rng)
    warm = pairs[~cold]
    return SplitData(
        user_ids=user_ids,
        item_ids=item_ids,
        train=_sorted(warm[labels == 0]),
        valid=_sorted(warm[labels == 1]),
        test=_sorted(warm[labels == 2]),
        cold_test=_sorted(pairs[cold]),
        cold_items=cold_items,
        stats=stats,
        method="random",
    )


def _temporal_split(catalog: Catalog, frame: pd.DataFrame, cfg: SplitConfig, stats: dict[str, int]) -> SplitData:
    times = frame["timestamp"].to_numpy()
    valid_from, test_from = np.quantile(times, [1 - cfg.valid_ratio - cfg.test_ratio, 1 - cfg.test_ratio])
    period = np.select([times < valid_from, times < test_from], [0, 1], 2)
    stats.update(valid_from=int(valid_from), test_from=int(test_from))
    train = frame[period == 0]
    user_ids = pd.unique(train["user_id"]).tolist()
    item_ids, cold_items = _warm_then_cold(catalog, set(train["item_id"]))
    pairs = _pairs(frame, user_ids, item_ids)
    warm_user = pairs[:, 0] >= 0
    warm_item = pairs[:, 1] < len(item_ids) - len(cold_items)
    stats["valid_dropped_new"] = int(((period == 1) & ~(warm_user & warm_item)).sum())
    later = frame[(period == 2) & ~warm_user]
    new_user_ids = pd.unique(later["user_id"]).tolist()
    return SplitData(
        user_ids=user_ids,
        item_ids=item_ids,
        train=_sorted(pairs[period == 0]),
        valid=_sorted(pairs[(period == 1) & warm_user & warm_item]),
        test=_sorted(pairs[(period == 2) & warm_user & warm_item]),
        cold_test=_sorted(pairs[(period == 2) & warm_user & ~warm_item]),
        cold_items=cold_items,
        stats=stats,
        method="temporal",
        new_user_ids=new_user_ids,
        new_user_test=_sorted(_pairs(later, new_user_ids, item_ids)),
    )


def _all_interactions(catalog: Catalog, frame: pd.DataFrame, cfg: SplitConfig, stats: dict[str, int]) -> SplitData:
    user_ids = pd.unique(frame["user_id"]).tolist()
    item_ids, cold_items = _warm_then_cold(catalog, set(frame["item_id"]))
    return SplitData(
        user_ids=user_ids,
        item_ids=item_ids,
        train=_sorted(_pairs(frame, user_ids, item_ids)),
        valid=_no_pairs(),
        test=_no_pairs(),
        cold_test=_no_pairs(),
        cold_items=cold_items,
        stats=stats,
        method="none",
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
