"""features: V view embeddings + image per item, chunking, caching, MMRec export, view weights."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from cliper.views import chunk_prompts
from offline.clip.alignment import image_to_text_recall, view_attention
from offline.clip.features import Features, FeaturesConfig, resolve_clip, run_features
from offline.clip.model import ClipSpec, load_clip, read_clip_spec
from offline.clip.train import TrainClipConfig, train_clip
from offline.commands import features as features_command
from offline.config import ConfigError
from offline.data.catalog import load_catalog
from offline.data.split import split_catalog
from offline.data.synth import SynthConfig, generate

LONG = " ".join(f"word{i} about the product" for i in range(40))  # far over a 32-token context


@pytest.fixture(scope="module")
def tiny():
    return load_clip(ClipSpec(model="cliper-tiny"))


@pytest.fixture(scope="module")
def catalog(synth_world: Path):
    return load_catalog(synth_world)


@pytest.fixture(scope="module")
def extracted(catalog, tiny, tmp_path_factory: pytest.TempPathFactory):
    run = tmp_path_factory.mktemp("features_run")
    return run, *run_features(catalog, tiny, run, FeaturesConfig())


def test_outputs_follow_the_contract(extracted, catalog, synth_world: Path) -> None:
    run, features, _, reused = extracted
    assert not reused
    folder = run / "features"
    text_views, image = np.load(folder / "text_views.npy"), np.load(folder / "image.npy")
    assert text_views.shape == (5, 150, 64) and image.shape == (150, 64)
    assert text_views.dtype == np.float32 and image.dtype == np.float32
    meta = json.loads((folder / "items.json").read_text())
    assert meta["item_ids"] == catalog.items["item_id"].tolist()
    assert meta["views"] == ["title", "brand", "categories", "description", "global"]
    assert meta["templates"]["brand"] == "The product brand is {}."
    assert meta["clip"]["model"] == "cliper-tiny" and meta["clip"]["embed_dim"] == 64
    noise = pd.read_csv(synth_world / "noise.csv", dtype={"item_id": str})
    assert {bad["item_id"] for bad in meta["bad_images"]} == set(noise.loc[noise["image_broken"], "item_id"])
    assert len(meta["cache_key"]) == 64 and meta["chunked_items"] >= 0


def test_text_views_are_the_view_prompts(extracted, catalog, tiny) -> None:
    _, features, _, _ = extracted
    row = catalog.items.iloc[7].to_dict()
    prompts = catalog.views.prompts(row)
    short = [v for v, prompt in enumerate(prompts) if tiny.count_tokens(prompt) <= tiny.context_length]
    expected = tiny.encode_texts([prompts[v] for v in short])
    np.testing.assert_allclose(features.text_views[short, 7], expected, atol=1e-5)


def test_mmrec_export_is_aligned_to_the_split(extracted, catalog) -> None:
    run, features, _, _ = extracted
    folder = run / "features" / "mmrec"
    split = split_catalog(catalog, FeaturesConfig().split)
    warm = split.item_ids[: split.n_warm_items]
    image, text = np.load(folder / "image_feat.npy"), np.load(folder / "text_feat.npy")
    assert image.shape == (len(warm), 64) and text.shape == (5, len(warm), 64)
    position = catalog.items["item_id"].tolist().index(warm[3])
    np.testing.assert_array_equal(image[3], features.image[position])
    inter = pd.read_csv(folder / f"{catalog.root.name}.inter", sep="\t")
    assert list(inter.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    assert inter["itemID"].max() < len(warm) and set(inter["x_label"]) == {0, 1, 2}
    assert features.meta["mmrec"]["items"] == len(warm)


def test_rerun_reuses_the_cache_and_changes_invalidate_it(extracted, catalog, tiny, synth_world: Path) -> None:
    run, features, _, _ = extracted
    again, _, reused = run_features(catalog, tiny, run, FeaturesConfig())
    assert reused and again.meta["cache_key"] == features.meta["cache_key"]
    np.testing.assert_array_equal(again.text_views, features.text_views)
    other = run.parent / "other_run"
    mean, _, reused = run_features(catalog, tiny, other, FeaturesConfig(pooling="mean"))
    assert not reused and mean.meta["cache_key"] != features.meta["cache_key"]
    image = synth_world / catalog.items["image_path"].iloc[0]
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        _, _, reused = run_features(catalog, tiny, other, FeaturesConfig(pooling="mean"))
        assert not reused
    finally:
        os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_features_are_deterministic(extracted, catalog, tiny, tmp_path: Path) -> None:
    _, features, _, _ = extracted
    fresh, _, reused = run_features(catalog, tiny, tmp_path, FeaturesConfig(batch_size=7))
    assert not reused
    np.testing.assert_allclose(fresh.text_views, features.text_views, atol=1e-5)
    np.testing.assert_allclose(fresh.image, features.image, atol=1e-5)


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_long_text_is_chunked_and_pooled(make_catalog, product_row, tiny, tmp_path: Path, pooling: str) -> None:
    items = [product_row("a", description=LONG), product_row("b"), product_row("c", title=LONG)]
    root = make_catalog(items, [])
    catalog = load_catalog(root)
    features, _, _ = run_features(catalog, tiny, tmp_path, FeaturesConfig(pooling=pooling))
    meta = features.meta
    assert meta["chunked_items"] == 2
    assert meta["chunked_by_view"] == {"title": 1, "brand": 0, "categories": 0, "description": 1, "global": 2}
    assert len(meta["bad_images"]) == 3  # no image files at all: placeholders, counted
    assert meta["mmrec"]["skipped"]  # no interactions to split
    chunks = chunk_prompts("The product description is {}.", LONG, tiny.count_tokens, tiny.context_length, 8)
    assert len(chunks) > 1
    vectors = tiny.encode_texts(chunks)
    expected = vectors.sum(axis=0) if pooling == "sum" else vectors.mean(axis=0)
    np.testing.assert_allclose(features.text_views[3, 0], expected, atol=1e-4)


def test_align_and_load(extracted) -> None:
    run, features, _, _ = extracted
    loaded = Features.load(run / "features")
    ids = [features.item_ids[5], features.item_ids[2]]
    image, text = loaded.align(ids)
    np.testing.assert_array_equal(image, features.image[[5, 2]])
    np.testing.assert_array_equal(text, features.text_views[:, [5, 2]])
    with pytest.raises(ConfigError, match="1 items have no features"):
        loaded.align(["no-such-item"])


def test_resolve_clip(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "clip"
    folder.mkdir(parents=True)
    (folder / "clip.json").write_text(json.dumps({"model": "cliper-tiny", "checkpoint": "checkpoint.pt"}))
    from_run = resolve_clip(str(tmp_path / "run"), None, tmp_path / "other", None)
    assert from_run.checkpoint == folder / "checkpoint.pt"
    assert resolve_clip(str(folder), None, tmp_path, None) == from_run
    assert resolve_clip(None, None, tmp_path / "run", None) == from_run
    assert resolve_clip("ViT-B-32", "laion2b_s34b_b79k", tmp_path, None) == ClipSpec(
        model="ViT-B-32", pretrained="laion2b_s34b_b79k"
    )
    configured = ClipSpec(model="cliper-tiny")
    assert resolve_clip(None, None, tmp_path, configured) == configured
    with pytest.raises(ConfigError, match="pass --clip"):
        resolve_clip(None, None, tmp_path, None)


def test_command_line(synth_world: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(features_command.command)
    args = ["--data", str(synth_world), "--out", str(tmp_path), "--clip", "cliper-tiny"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "150 items x 5 views, dim 64" in first.output and "description" in first.output
    assert json.loads((tmp_path / "features" / "alignment.json").read_text())["global"]["texts"] == 150
    second = CliRunner().invoke(app, args)
    assert "reused" in second.output


def test_alignment_measures() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(20, 8))
    perfect = image_to_text_recall(image, 3 * image)
    assert perfect["r1"] == 1.0 and perfect["chance_r1"] == pytest.approx(0.05)
    shuffled = image_to_text_recall(image, image[::-1].copy())
    assert shuffled["r1"] == 0.0
    views = np.stack([image, rng.normal(size=(20, 8))])
    weights = view_attention(views, image)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0)
    assert (weights[0] > weights[1]).all()


def test_misleading_descriptions_get_lower_view_weights(tmp_path: Path) -> None:
    """The CLIPER claim on a small synthetic world: a description copied from another item (of
    another colour and category) aligns worse with the image, so its view weight drops."""
    world = tmp_path / "world"
    generate(world, SynthConfig(items=200, users=60, corpus_items=300, image_size=32, min_interactions=8, max_interactions=20))
    train_clip(world / "corpus", tmp_path / "run", TrainClipConfig.model_validate(
        {"clip": {"model": "cliper-tiny"}, "epochs": 15, "batch_size": 16}
    ))
    handle = load_clip(read_clip_spec(tmp_path / "run" / "clip"))
    features, _, _ = run_features(load_catalog(world), handle, tmp_path / "run", FeaturesConfig())
    weights = view_attention(features.text_views, features.image)[features.meta["views"].index("description")]
    noise = pd.read_csv(world / "noise.csv")
    misleading = noise["description_misleading"].to_numpy()
    clean = ~(noise["description_misleading"] | noise["description_empty"]).to_numpy()
    assert misleading.sum() >= 20 and clean.sum() >= 100
    assert weights[misleading].mean() < 0.75 * weights[clean].mean()
