"""The scale generator: Amazon-Clothing's exact counts, long tails, clusters, determinism by
seed, the features folder, and the command's catalog through the random split."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from cliper.views import GLOBAL_VIEW
from offline.commands import scale as scale_command
from offline.data.catalog import load_catalog
from offline.data.scale import FEATURES_DIR, ScaleConfig, generate_scale, scale_interactions
from offline.data.split import SplitConfig, split_catalog
from offline.models import ContentFeatures

SMALL = ScaleConfig(users=300, items=200, interactions=3000, dim=32, clusters=5)


@pytest.fixture(scope="module")
def clothing() -> np.ndarray:
    """The default (1x Amazon-Clothing) interactions."""
    pairs, _ = scale_interactions(ScaleConfig())
    return pairs


def test_clothing_counts_are_exact_and_pairs_distinct(clothing: np.ndarray) -> None:
    assert len(clothing) == 278_677
    assert len(np.unique(clothing, axis=0)) == len(clothing)
    user_degrees = np.bincount(clothing[:, 0])
    item_degrees = np.bincount(clothing[:, 1])
    assert len(user_degrees) == 39_387 and len(item_degrees) == 23_033
    # every user and item has 5 or more: MMRec's 5-core filter would keep all of them
    assert user_degrees.min() >= 5 and item_degrees.min() >= 5


def test_clothing_degrees_are_long_tailed(clothing: np.ndarray) -> None:
    users = np.bincount(clothing[:, 0])
    assert ((users >= 5) & (users <= 10)).mean() > 0.8  # most users have 5 to 10
    assert 1 <= (users >= 100).sum() <= 100 and users.max() >= 150  # a few have hundreds
    items = np.sort(np.bincount(clothing[:, 1]))[::-1]
    assert items[: len(items) // 100].sum() > 5 * 0.01 * items.sum()  # the top 1% far above its share
    # Zipf: over ranks 10..1000, log(extra interactions) falls linearly in log(rank), slope -0.6
    ranks = np.arange(10, 1001)
    slope = np.polyfit(np.log(ranks), np.log(items[ranks - 1] - 5), 1)[0]
    assert slope == pytest.approx(-0.6, abs=0.1)


def test_factor_multiplies_every_count() -> None:
    cfg = ScaleConfig(users=40, items=30, interactions=400, factor=3, clusters=3)
    pairs, clusters = scale_interactions(cfg)
    assert cfg.shape == (120, 90, 1200)
    assert len(pairs) == 1200 and len(np.unique(pairs, axis=0)) == 1200
    assert len(np.unique(pairs[:, 0])) == 120 and len(np.unique(pairs[:, 1])) == 90 == len(clusters)


def test_users_prefer_their_own_cluster() -> None:
    pairs, clusters = scale_interactions(SMALL)
    item_cluster = clusters[pairs[:, 1]]
    shares = [np.bincount(item_cluster[pairs[:, 0] == user]).max() / (pairs[:, 0] == user).sum() for user in range(300)]
    assert np.mean(shares) > 0.6  # 5 clusters: 0.2 and a bit without affinity


def test_infeasible_counts_say_what_to_fix() -> None:
    with pytest.raises(ValidationError, match="use at least 500"):
        ScaleConfig(users=100, items=60, interactions=400)
    with pytest.raises(ValidationError, match="more than half the items"):
        ScaleConfig(users=20, items=20, interactions=300)


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.rglob("*.*"))}


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    generate_scale(tmp_path / "a", SMALL)
    generate_scale(tmp_path / "b", SMALL)
    generate_scale(tmp_path / "c", SMALL.model_copy(update={"seed": 1}))
    first = digests(tmp_path / "a")
    assert set(first) == {"items.csv", "interactions.csv", "image.npy", "text_views.npy", "items.json"}
    assert digests(tmp_path / "b") == first
    other = digests(tmp_path / "c")
    for name in ("interactions.csv", "image.npy", "text_views.npy"):
        assert other[name] != first[name], name


def test_features_are_unit_vectors_clustered_like_the_items(tmp_path: Path) -> None:
    generate_scale(tmp_path, SMALL)
    items = pd.read_csv(tmp_path / "items.csv", dtype=str, keep_default_na=False)
    shuffled = items["item_id"].sample(frac=1.0, random_state=0).tolist()
    content = ContentFeatures.load(tmp_path / FEATURES_DIR, shuffled)
    assert content.image.shape == (200, 32) and content.text_views.shape == (200, 5, 32)
    assert content.views[-1] == GLOBAL_VIEW
    assert np.allclose(content.image.norm(dim=-1), 1, atol=1e-5)
    assert np.allclose(content.text_views.norm(dim=-1), 1, atol=1e-5)
    cluster = items.set_index("item_id").loc[shuffled, "brand"].to_numpy()
    same = cluster[:, None] == cluster[None, :]
    for vectors in (content.image, content.text_views[:, 0], content.text_views[:, -1]):
        cosine = (vectors @ vectors.T).numpy()
        off_diagonal = ~np.eye(len(cluster), dtype=bool)
        assert cosine[same & off_diagonal].mean() > 0.4 > 0.1 > abs(cosine[~same].mean())
    # an item's image and its text views share its own latent point beyond the cluster's
    image_text = (content.image[:, None, :] * content.text_views[None, :, 0, :]).sum(-1).numpy()
    assert np.diag(image_text).mean() > image_text[same & ~np.eye(200, dtype=bool)].mean() + 0.1


def test_command_writes_a_catalog_the_random_split_keeps_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scale_command.command(out=tmp_path, users=60, items=40, interactions=500, factor=2, dim=16, seed=3)
    assert "120 users, 80 items, 1000 interactions" in capsys.readouterr().out
    split = split_catalog(load_catalog(tmp_path), SplitConfig())
    assert split.method == "random" and split.stats["k_core_dropped"] == 0
    assert split.n_users == 120 and split.n_items == 80
    assert len(split.train) + len(split.valid) + len(split.test) + len(split.cold_test) == 1000
    content = ContentFeatures.load(tmp_path / FEATURES_DIR, split.item_ids)
    assert content.n_items == 80 and content.image_dim == 16
