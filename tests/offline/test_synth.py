"""The synthetic world: files, determinism, planted noise, user tastes, item arrivals, the
long-tail preset, the CLI command."""

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offline.commands import synth as synth_command
from offline.config import ConfigError, load_config
from offline.data.catalog import load_catalog
from offline.data.split import k_core
from offline.data.synth import CATEGORIES, COLOUR_NAMES, MISLEADABLE, SynthConfig, generate

WORLDS = Path(__file__).parents[2] / "offline" / "data" / "worlds"
MISLEADING_VIEWS = WORLDS / "misleading-views.yaml"
LONGTAIL = WORLDS / "longtail.yaml"
# sha256 of files written by the implementation before item arrivals and skewed interaction
# counts existed: with those knobs off, the worlds must stay the same, byte for byte
TINY_WORLD_DIGESTS = {
    "interactions.csv": "884768cacfb2ce1fdd0fcecae58b6b504b5a6100c80cb4474e9c77f0195afd08",
    "items.csv": "202a02fe4f90c041ad966c59d7635aae49474ff6a60c76d71c29b45dc23c4dad",
    "attributes.csv": "3082b3be4f2937f8e8173358c4ac9d908e79a3b0fa79f1cb3879b1c7befa2978",
    "noise.csv": "3ef64a77aa95b75002e2a9af3492b21316c0251813923da07100af3abab10493",
    "corpus/captions.csv": "dc063de48b3d67efaebd0223211409735f46705e95cc5ac0d673d38a6a3c255e",
}
# The default world's interactions, generated with numpy's AVX-512 kernels switched off: its
# choices go through float logs and exponentials whose last bits differ between numpy's AVX2
# and AVX-512 code paths (this digest was e9be1705... on an AVX-512 machine), so the check
# runs the generator in a process that uses the AVX2 paths on every machine.
DEFAULT_INTERACTIONS_DIGEST = "0ea266cf00b66ef4b9e2f77dd7b00989c2541b19c712e625edaa3c3061eda5f8"
NUMPY_WITHOUT_AVX512 = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}


def digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def read_table(world: Path, name: str) -> pd.DataFrame:
    """A CSV of the world as strings, empty cells kept as ''."""
    return pd.read_csv(world / name, dtype=str, keep_default_na=False)


def colours_in(text: str) -> set[str]:
    return {colour for colour in COLOUR_NAMES if re.search(rf"\b{colour}\b", text.lower())}


@pytest.fixture(scope="module")
def world(synth_world: Path) -> pd.DataFrame:
    """items joined with their noise flags and latent attributes."""
    latent = read_table(synth_world, "attributes.csv").set_index("item_id").add_prefix("latent_")
    merged = read_table(synth_world, "items.csv").merge(read_table(synth_world, "noise.csv"), on="item_id")
    merged = merged.join(latent, on="item_id")
    for flag in [
        "brand_missing",
        "description_empty",
        "description_misleading",
        "title_colour_omitted",
    ]:
        merged[flag] = merged[flag] == "True"
    return merged


def test_writes_every_file(synth_world: Path) -> None:
    for name in [
        "items.csv",
        "interactions.csv",
        "catalog.yaml",
        "noise.csv",
        "attributes.csv",
        "corpus/captions.csv",
        "corpus/attributes.csv",
    ]:
        assert (synth_world / name).is_file(), name
    assert len(list((synth_world / "images").glob("*.jpg"))) == 150
    assert len(list((synth_world / "corpus" / "images").glob("*.jpg"))) == 40


def test_deterministic_for_a_seed(
    synth_world: Path, tiny_world_config: SynthConfig, tmp_path: Path
) -> None:
    generate(tmp_path / "again", tiny_world_config)
    assert digest(tmp_path / "again") == digest(synth_world)
    generate(
        tmp_path / "other", tiny_world_config.model_copy(update={"seed": 1, "corpus_items": 0})
    )
    assert (tmp_path / "other" / "items.csv").read_bytes() != (
        synth_world / "items.csv"
    ).read_bytes()


def test_noise_flags_match_the_text(world: pd.DataFrame) -> None:
    assert (world.loc[world["brand_missing"], "brand"] == "").all()
    kept = world[~world["brand_missing"]]
    assert (kept["brand"] == kept["latent_brand"]).all()
    assert (world.loc[world["description_empty"], "description"] == "").all()
    assert not (world["description_empty"] & world["description_misleading"]).any()
    for flag in ["brand_missing", "description_empty", "description_misleading"]:
        assert 0.05 < world[flag].mean() < 0.4, flag


def test_clean_descriptions_state_the_item_colour(world: pd.DataFrame) -> None:
    clean = world[~world["description_empty"] & ~world["description_misleading"]]
    assert all(colours_in(d) == {c} for d, c in zip(clean["description"], clean["latent_colour"]))
    kept = world[~world["title_colour_omitted"]]
    assert all(colours_in(t) == {c} for t, c in zip(kept["title"], kept["latent_colour"]))
    omitted = world[world["title_colour_omitted"]]
    assert len(omitted) and all(not colours_in(t) for t in omitted["title"])


def test_misleading_descriptions_describe_another_item(world: pd.DataFrame) -> None:
    misleading = world[world["description_misleading"]]
    assert len(misleading) > 0
    attributes = world.set_index("item_id")
    for _, row in misleading.iterrows():
        source = attributes.loc[row["description_source"]]
        assert (
            source["latent_colour"] != row["latent_colour"]
            and source["latent_category"] != row["latent_category"]
        )
        assert colours_in(row["description"]) == {source["latent_colour"]}
    assert (world.loc[~world["description_misleading"], "description_source"] == "").all()


@pytest.fixture(scope="module")
def lying_world(tiny_world_config: SynthConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world again, with the shipped misleading-views shares."""
    shares = load_config(SynthConfig, MISLEADING_VIEWS).model_dump(exclude_defaults=True)
    out = tmp_path_factory.mktemp("lying_world")
    generate(out, tiny_world_config.model_copy(update=shares))
    return out


def test_misleading_titles_and_categories_describe_another_item(lying_world: Path) -> None:
    items, noise, latent = (
        read_table(lying_world, name).set_index("item_id")
        for name in ["items.csv", "noise.csv", "attributes.csv"]
    )
    noun = {path: noun for path, noun, _ in CATEGORIES}
    for field in MISLEADABLE:
        lies = noise.index[noise[f"{field}_misleading"] == "True"]
        assert 0.08 < len(lies) / len(noise) < 0.35, field
        assert (noise.loc[noise[f"{field}_misleading"] == "False", f"{field}_source"] == "").all()
        for item in lies:
            source = latent.loc[noise.at[item, f"{field}_source"]]
            assert source["colour"] != latent.at[item, "colour"]
            assert source["category"] != latent.at[item, "category"]
    for item in noise.index[noise["categories_misleading"] == "True"]:
        assert items.at[item, "categories"] == latent.loc[noise.at[item, "categories_source"], "category"]
    truthful = noise["categories_misleading"] == "False"
    assert (items.loc[truthful, "categories"] == latent.loc[truthful, "category"]).all()
    for item in noise.index[noise["title_misleading"] == "True"]:
        source = latent.loc[noise.at[item, "title_source"]]
        assert noun[source["category"]] in items.at[item, "title"].lower()
        assert colours_in(items.at[item, "title"]) <= {source["colour"]}


def test_lies_leave_the_rest_of_the_world_unchanged(synth_world: Path, lying_world: Path) -> None:
    """Same seed, more lies: the same items, pictures and users, so only the text differs."""
    for name in ["interactions.csv", "attributes.csv", "corpus/captions.csv"]:
        assert (lying_world / name).read_bytes() == (synth_world / name).read_bytes(), name
    images = digest(synth_world / "images")
    assert digest(lying_world / "images") == images
    assert (lying_world / "items.csv").read_bytes() != (synth_world / "items.csv").read_bytes()


def test_interactions_follow_user_tastes(synth_world: Path, tiny_world_config: SynthConfig) -> None:
    catalog = load_catalog(synth_world)
    inter = catalog.interactions
    per_user = inter.groupby("user_id").size()
    assert per_user.between(
        tiny_world_config.min_interactions, tiny_world_config.max_interactions
    ).all()
    assert len(per_user) == tiny_world_config.users
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert set(inter["rating"]) <= {1, 2, 3, 4, 5} and inter["timestamp"].dtype == np.int64
    colour = pd.read_csv(synth_world / "attributes.csv").set_index("item_id")["colour"]

    def top_colour_share(frame: pd.DataFrame) -> float:
        colours = frame["item_id"].map(colour)
        return (
            colours.groupby(frame["user_id"])
            .agg(lambda s: s.value_counts(normalize=True).iloc[0])
            .mean()
        )

    shuffled = inter.assign(
        item_id=np.random.default_rng(0).permutation(inter["item_id"].to_numpy())
    )
    assert top_colour_share(inter) > top_colour_share(shuffled) + 0.04


def test_worlds_without_the_new_knobs_are_unchanged(synth_world: Path, tmp_path: Path) -> None:
    for name, expected in TINY_WORLD_DIGESTS.items():
        assert hashlib.sha256((synth_world / name).read_bytes()).hexdigest() == expected, name
    script = ("import sys; from pathlib import Path; from offline.data.synth import SynthConfig, generate; "
              "generate(Path(sys.argv[1]), SynthConfig(corpus_items=0, image_size=32))")  # the image size is not drawn
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], env={**os.environ, **NUMPY_WITHOUT_AVX512},
                   check=True, capture_output=True, timeout=300)
    written = hashlib.sha256((tmp_path / "interactions.csv").read_bytes()).hexdigest()
    assert written == DEFAULT_INTERACTIONS_DIGEST


@pytest.fixture(scope="module")
def longtail_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped long-tail preset at a fifth of its size."""
    out = tmp_path_factory.mktemp("longtail_world")
    smaller = {"items": 600, "users": 300, "corpus_items": 0, "image_size": 32}
    generate(out, load_config(SynthConfig, LONGTAIL, **smaller))
    return out


def test_items_are_not_bought_before_their_launch(longtail_world: Path) -> None:
    inter = pd.read_csv(longtail_world / "interactions.csv")
    launch = pd.read_csv(longtail_world / "attributes.csv").set_index("item_id")["launch_timestamp"]
    assert (inter["timestamp"] >= inter["item_id"].map(launch)).all()
    at_start = launch == launch.min()
    assert at_start.mean() == pytest.approx(0.3)
    assert launch[~at_start].max() - launch.min() > 300 * 86_400  # launches spread over the year
    assert not inter.duplicated(["user_id", "item_id"]).any()
    spans = inter.groupby("user_id")["timestamp"].agg(lambda t: t.max() - t.min())
    assert spans.median() < 240 * 86_400  # each user is active over a window, not the whole year


def test_longtail_preset_is_sparse_and_new_items_sell(longtail_world: Path) -> None:
    inter = pd.read_csv(longtail_world / "interactions.csv")
    items = pd.read_csv(longtail_world / "items.csv")
    per_item = inter["item_id"].value_counts().reindex(items["item_id"], fill_value=0)
    assert per_item.median() < 3 and (per_item < 3).mean() > 0.5 and (per_item >= 5).mean() < 0.5
    assert (per_item == 0).any()  # unsold items stay in the catalog
    per_user = inter.groupby("user_id").size()
    assert per_user.between(1, 15).all() and per_user.median() <= 3
    assert len(k_core(inter, 5)) < 0.1 * len(inter)
    start, end = inter["timestamp"].min(), inter["timestamp"].max()
    cut = start + 0.8 * (end - start)
    first_seen = inter.groupby("item_id")["timestamp"].min()
    late = inter[inter["timestamp"] >= cut]
    assert (late["item_id"].map(first_seen) >= cut).mean() > 0.1


def test_arrivals_need_enough_items_at_the_start() -> None:
    with pytest.raises(ValueError, match="items_at_start"):
        SynthConfig(items=100, item_arrivals=True, items_at_start=0.1, max_interactions=20)


def test_unknown_config_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "synth.yaml"
    path.write_text("items: 100\nbrand_mising: 0.3\n")
    with pytest.raises(ConfigError, match="brand_mising"):
        load_config(SynthConfig, path)


def test_command_reports_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synth_command.command(out=tmp_path / "w", items=30, users=12, seed=5, corpus_items=4)
    output = capsys.readouterr().out
    assert f"synthetic world in {tmp_path / 'w'}" in output and "30 items, 12 users" in output
    assert "planted noise: brand_missing" in output
    assert len(load_catalog(tmp_path / "w").items) == 30
