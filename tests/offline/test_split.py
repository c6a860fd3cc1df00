"""Split: dedup, min_rating, k-core, cold items, per-user 80/10/10, id maps, save/load, MMRec."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cliper.views import load_views
from offline.data.catalog import CatalogError, build_catalog, load_catalog
from offline.data.split import SplitConfig, SplitData, k_core, split_catalog


@pytest.fixture(scope="module")
def catalog(synth_world: Path):
    return load_catalog(synth_world)


@pytest.fixture(scope="module")
def split(catalog) -> SplitData:
    return split_catalog(catalog, SplitConfig(k_core=3))


def as_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, pairs.tolist()))


def make(
    rows: list[tuple[str, str]], items: list[str] | None = None, ratings: list[float] | None = None
):
    items = items or sorted({item for _, item in rows})
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    if ratings is not None:
        frame["rating"] = ratings
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
    one, two = (split_catalog(catalog, SplitConfig(k_core=3)) for _ in range(2))
    for name in ("train", "valid", "test", "cold_test", "cold_items"):
        assert np.array_equal(getattr(one, name), getattr(two, name))
    other = split_catalog(catalog, SplitConfig(k_core=3, seed=7))
    assert not np.array_equal(one.cold_items, other.cold_items) or one.item_ids != other.item_ids


def test_dedup_min_rating_and_stats() -> None:
    rows = [("a", "x"), ("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")]
    split = split_catalog(
        make(rows, ratings=[5, 1, 4, 2, 5]), SplitConfig(k_core=1, cold_item_ratio=0, min_rating=3)
    )
    assert split.stats["duplicates_dropped"] == 1  # the first ("a", "x") (rating 5) is kept
    assert split.stats["below_min_rating_dropped"] == 1  # ("b", "x") rated 2
    assert len(split.train) + len(split.valid) + len(split.test) == 3
    with pytest.raises(CatalogError, match="no rating column"):
        split_catalog(make(rows), SplitConfig(min_rating=3))


def test_k_core_is_iterative() -> None:
    # dropping user c (1 interaction) leaves item z with 1 interaction, which then goes too
    frame = pd.DataFrame({"user_id": list("aabbcd"), "item_id": list("xyxyzz")})
    assert k_core(frame, 2)["item_id"].tolist() == list("xyxy")


def test_empty_k_core_is_explained() -> None:
    with pytest.raises(CatalogError, match="no interactions survive the 5-core filter"):
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
