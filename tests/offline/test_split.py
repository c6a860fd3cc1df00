"""Split: dedup, min_rating, k-core, cold items, per-user 80/10/10, id maps, save/load, MMRec."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cliper.views import load_views
from offline.data.catalog import CatalogError, build_catalog, load_catalog
from offline.config import ConfigError
from offline.data.split import (
    SplitConfig,
    SplitData,
    SplitTooSparse,
    filtered_interactions,
    k_core,
    split_catalog,
)


@pytest.fixture(scope="module")
def catalog(synth_world: Path):
    return load_catalog(synth_world)


@pytest.fixture(scope="module")
def split(catalog) -> SplitData:
    return split_catalog(catalog, SplitConfig(method="random", k_core=3))


def as_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, pairs.tolist()))


def make(
    rows: list[tuple[str, str]],
    items: list[str] | None = None,
    ratings: list[float] | None = None,
    times: list[int] | None = None,
):
    items = items or sorted({item for _, item in rows})
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    if ratings is not None:
        frame["rating"] = ratings
    if times is not None:
        frame["timestamp"] = times
    item_frame = pd.DataFrame(
        {
            "item_id": items,
            "image_path": "",
            "title": "",
            "brand": "",
            "categories": "",
            "description": "",
        }
    )
    return build_catalog(Path("."), item_frame, frame, load_views("products"))


def test_splits_do_not_leak(split: SplitData) -> None:
    parts = [as_set(split.train), as_set(split.valid), as_set(split.test), as_set(split.cold_test)]
    assert sum(map(len, parts)) == len(set().union(*parts))
    for array in (split.train, split.valid, split.test, split.cold_test, split.cold_items):
        assert array.dtype == np.int64
    assert split.train.shape[1] == 2 and split.cold_test.shape[1] == 2


def test_cold_items_only_in_cold_test(split: SplitData) -> None:
    cold = set(split.cold_items.tolist())
    assert cold and len(cold) == round(0.2 * split.n_items)
    for warm_split in (split.train, split.valid, split.test):
        assert not cold & set(warm_split[:, 1].tolist())
    assert set(split.cold_test[:, 1].tolist()) <= cold
    assert split.cold_items.tolist() == list(range(split.n_warm_items, split.n_items))  # cold last


def test_k_core_holds_and_ids_map_back(catalog, split: SplitData) -> None:
    every = np.concatenate([split.train, split.valid, split.test, split.cold_test])
    assert np.bincount(every[:, 0], minlength=split.n_users).min() >= 3
    assert np.bincount(every[:, 1], minlength=split.n_items).min() >= 3
    raw = set(zip(catalog.interactions["user_id"], catalog.interactions["item_id"]))
    assert {(split.user_ids[u], split.item_ids[i]) for u, i in every.tolist()} <= raw
    assert len(set(split.item_ids)) == split.n_items


def test_per_user_ratios_and_small_users(split: SplitData) -> None:
    warm = np.concatenate([split.train, split.valid, split.test])
    counts = np.bincount(warm[:, 0], minlength=split.n_users)
    valid = np.bincount(split.valid[:, 0], minlength=split.n_users)
    test = np.bincount(split.test[:, 0], minlength=split.n_users)
    large = counts >= 10
    assert large.any() and (~large & (counts >= 3)).any()
    assert np.array_equal(test[large], np.round(counts[large] * 0.1))
    assert np.array_equal(valid[large], np.round(counts[large] * 0.1))
    small = (counts >= 3) & (counts < 10)
    assert (test[small] == 1).all() and (valid[small] == 1).all()


def test_fewer_than_three_all_train_and_small_user_rule() -> None:
    rows = [("a", f"i{k}") for k in range(5)] + [("b", "i0"), ("b", "i1")]
    split = split_catalog(make(rows), SplitConfig(k_core=1, cold_item_ratio=0))
    b = split.user_ids.index("b")
    assert (split.train[:, 0] == b).sum() == 2
    a = split.user_ids.index("a")
    assert [(part[:, 0] == a).sum() for part in (split.train, split.valid, split.test)] == [3, 1, 1]


def test_deterministic_and_seed_dependent(catalog) -> None:
    one, two = (split_catalog(catalog, SplitConfig(method="random", k_core=3)) for _ in range(2))
    for name in ("train", "valid", "test", "cold_test", "cold_items"):
        assert np.array_equal(getattr(one, name), getattr(two, name))
    other = split_catalog(catalog, SplitConfig(method="random", k_core=3, seed=7))
    assert not np.array_equal(one.cold_items, other.cold_items) or one.item_ids != other.item_ids


def test_dedup_min_rating_and_stats() -> None:
    rows = [("a", "x"), ("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]
    split = split_catalog(
        make(rows, ratings=[5, 1, 4, 2, 5]), SplitConfig(method="none", min_rating=3)
    )
    assert split.stats["duplicates_dropped"] == 1  # the first ("a", "x") (rating 5) is kept
    assert split.stats["below_min_rating_dropped"] == 1  # ("b", "x") rated 2
    assert len(split.train) == 3
    with pytest.raises(CatalogError, match="no rating column"):
        split_catalog(make(rows), SplitConfig(min_rating=3))


def test_k_core_is_iterative() -> None:
    # dropping user c (1 interaction) leaves item z with 1 interaction, which then goes too
    frame = pd.DataFrame({"user_id": list("aabbcd"), "item_id": list("xyxyzz")})
    assert k_core(frame, 2)["item_id"].tolist() == list("xyxy")


def test_empty_k_core_is_explained() -> None:
    with pytest.raises(SplitTooSparse, match="no interactions survive the 5-core filter"):
        split_catalog(make([("a", "x"), ("b", "y")]), SplitConfig())


def test_save_load_and_mmrec_inter(split: SplitData, tmp_path: Path) -> None:
    split.save(tmp_path / "s")
    loaded = SplitData.load(tmp_path / "s")
    assert loaded.user_ids == split.user_ids and loaded.item_ids == split.item_ids
    assert loaded.stats == split.stats and np.array_equal(loaded.cold_test, split.cold_test)
    split.to_mmrec_inter(tmp_path / "mm" / "synth.inter")
    inter = pd.read_csv(tmp_path / "mm" / "synth.inter", sep="\t")
    assert list(inter.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    assert inter["x_label"].value_counts().to_dict() == {
        0: len(split.train),
        1: len(split.valid),
        2: len(split.test),
    }
    assert inter["itemID"].max() < split.n_warm_items
    with pytest.raises(FileNotFoundError, match="split.npz"):
        SplitData.load(tmp_path / "nothing")


def test_auto_is_temporal_with_timestamps_and_random_without(catalog) -> None:
    assert split_catalog(catalog, SplitConfig()).method == "temporal"
    rows = [("a", f"i{k}") for k in range(6)] * 1 + [(u, f"i{k}") for u in "bcde" for k in range(6)]
    assert split_catalog(make(rows), SplitConfig(k_core=1)).method == "random"


def test_temporal_split_cuts_by_time() -> None:
    """Twelve interactions at times 0..11, cut at the 60% and 80% quantiles (6.6 and 8.8): 7 train,
    2 valid, 3 test; what comes after the first cut is sorted by who and what was seen before it."""
    rows = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("a", "z"), ("b", "z"), ("c", "x")]
    rows += [("c", "y"), ("a", "new")]  # valid: warm; a new item (not a warm validation target)
    rows += [("b", "w"), ("c", "z"), ("d", "x")]  # test: w first seen here; warm; d is a new user
    items = ["x", "y", "z", "w", "new", "never"]
    split = split_catalog(make(rows, items=items, times=list(range(12))), SplitConfig(valid_ratio=0.2, test_ratio=0.2))
    assert split.method == "temporal"
    assert split.user_ids == ["a", "b", "c"] and split.new_user_ids == ["d"]
    assert split.item_ids[:3] == ["x", "y", "z"]  # warm: seen in training, catalog order
    assert split.item_ids[3:] == ["w", "new", "never"]  # every other catalog item is a new item
    assert split.cold_items.tolist() == [3, 4, 5]

    def named(pairs: np.ndarray, users: list[str]) -> set[tuple[str, str]]:
        return {(users[u], split.item_ids[i]) for u, i in pairs.tolist()}

    assert named(split.train, split.user_ids) == set(rows[:7])
    assert named(split.valid, split.user_ids) == {("c", "y")} and split.stats["valid_dropped_new"] == 1
    assert named(split.test, split.user_ids) == {("c", "z")}
    assert named(split.cold_test, split.user_ids) == {("b", "w")}
    assert named(split.new_user_test, split.new_user_ids) == {("d", "x")}


def test_temporal_split_keeps_the_earliest_duplicate_and_reads_dates() -> None:
    rows = [("a", "x"), ("a", "y"), ("a", "x")]
    dates = ["2024-01-03", "2024-01-01", "2024-01-02"]
    catalog = make(rows, items=["x", "y"], times=dates)
    frame = catalog.interactions
    split = split_catalog(catalog, SplitConfig(method="none"))
    assert split.stats["duplicates_dropped"] == 1 and len(split.train) == 2
    kept, _ = filtered_interactions(catalog, SplitConfig(method="temporal").resolve(catalog))
    assert kept["timestamp"].tolist() == [1704067200, 1704153600]  # y on Jan 1, x on Jan 2 (not Jan 3)
    assert kept["item_id"].tolist() == ["y", "x"] and len(frame) == 3


def test_temporal_split_refuses_a_cold_share_and_missing_timestamps() -> None:
    rows = [("a", "x"), ("b", "x")]
    with pytest.raises(ConfigError, match="random split only"):
        split_catalog(make(rows, times=[0, 1]), SplitConfig(cold_item_ratio=0.2))
    with pytest.raises(CatalogError, match="needs a timestamp column"):
        split_catalog(make(rows), SplitConfig(method="temporal"))


def test_temporal_split_that_cannot_evaluate_says_so() -> None:
    rows = [("a", "x"), ("b", "y"), ("c", "z")]  # nobody comes back after the cut-off
    with pytest.raises(SplitTooSparse, match="nothing to evaluate"):
        split_catalog(make(rows, times=[0, 1, 2]), SplitConfig())


def test_refit_split_has_every_interaction_and_every_catalog_item() -> None:
    rows = [("a", "x"), ("a", "y"), ("b", "y")]
    split = split_catalog(make(rows, items=["x", "y", "unsold"], times=[0, 1, 2]), SplitConfig(method="none"))
    assert split.method == "none" and not split.evaluable
    assert split.item_ids == ["x", "y", "unsold"] and split.cold_items.tolist() == [2]
    assert {(split.user_ids[u], split.item_ids[i]) for u, i in split.train.tolist()} == set(rows)


def test_temporal_split_survives_save_and_load(catalog, tmp_path: Path) -> None:
    split = split_catalog(catalog, SplitConfig(method="temporal"))
    split.save(tmp_path)
    loaded = SplitData.load(tmp_path)
    assert loaded.method == "temporal" and loaded.new_user_ids == split.new_user_ids
    for name in ("train", "valid", "test", "cold_test", "cold_items", "new_user_test"):
        assert np.array_equal(getattr(loaded, name), getattr(split, name))
