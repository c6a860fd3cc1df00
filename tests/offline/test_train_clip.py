"""train-clip: contrastive training lowers the loss, lifts retrieval, writes a loadable CLIP."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from offline.clip.model import load_clip, read_clip_spec
from offline.clip.train import TrainClipConfig, load_pairs, split_holdout, train_clip
from offline.commands import train_clip as train_clip_command
from offline.config import ConfigError
from offline.data.synth import SynthConfig, generate

EPOCHS = 15


@pytest.fixture(scope="module")
def corpus_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small world whose corpus is big enough to learn from in seconds."""
    out = tmp_path_factory.mktemp("clip_world")
    generate(out, SynthConfig(items=40, users=20, corpus_items=200, image_size=32))
    return out


@pytest.fixture(scope="module")
def trained(corpus_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("run")
    cfg = TrainClipConfig.model_validate(
        {"clip": {"model": "cliper-tiny"}, "epochs": EPOCHS, "batch_size": 16, "holdout": 0.2}
    )
    return run, train_clip(corpus_world / "corpus", run, cfg)


def test_training_lowers_the_loss_and_lifts_retrieval(trained: tuple[Path, dict]) -> None:
    _, metrics = trained
    assert len(metrics["loss"]) == EPOCHS
    assert [epoch["loss"] for epoch in metrics["history"]] == metrics["loss"]
    assert metrics["history"][-1]["heldout_r5"] == metrics["retrieval"]["heldout"]["after"]["r5"]
    assert metrics["loss"][-1] < metrics["loss"][0] - 0.3
    train = metrics["retrieval"]["train"]["after"]
    assert train["r5"] > 2 * train["chance_r5"]
    held = metrics["retrieval"]["heldout"]
    assert held["after"]["queries"] == metrics["heldout_images"] == 40
    assert held["after"]["r5"] >= held["before"]["r5"]


def test_outputs_reload_as_the_trained_clip(trained: tuple[Path, dict]) -> None:
    run, metrics = trained
    folder = run / "clip"
    assert json.loads((folder / "clip.json").read_text())["checkpoint"] == "checkpoint.pt"
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["loss"] == metrics["loss"] and saved["seconds"]["total"] > 0
    handle = load_clip(read_clip_spec(folder))
    assert handle.identity["model"] == "cliper-tiny" and handle.identity["weights_sha256"]
    assert handle.model.logit_scale.item() != pytest.approx(np.log(1 / 0.07))  # it was trained


def test_training_is_seeded(corpus_world: Path, tmp_path: Path) -> None:
    cfg = TrainClipConfig.model_validate({"clip": {"model": "cliper-tiny"}, "epochs": 1, "batch_size": 32})
    first = train_clip(corpus_world / "corpus", tmp_path / "a", cfg)
    second = train_clip(corpus_world / "corpus", tmp_path / "b", cfg)
    assert first["loss"] == second["loss"]


def test_catalog_pairs_skip_bad_images(synth_world: Path, tmp_path: Path) -> None:
    corpus = load_pairs(synth_world, None, {})
    assert len(corpus) == 150 and corpus.views.name == "synthetic-shop"
    broken = int(pd.read_csv(synth_world / "noise.csv")["image_broken"].sum())
    cfg = TrainClipConfig.model_validate({"clip": {"model": "cliper-tiny"}, "epochs": 1})
    metrics = train_clip(synth_world, tmp_path, cfg)
    assert metrics["images"] == 150 and len(metrics["bad_images"]) == broken > 0
    assert metrics["train_images"] + metrics["heldout_images"] == 150 - broken


def test_holdout_split_is_seeded_and_disjoint() -> None:
    train, held = split_holdout(100, 0.1, seed=3)
    again_train, again_held = split_holdout(100, 0.1, seed=3)
    assert len(held) == 10 and not set(train) & set(held) and len(train) + len(held) == 100
    np.testing.assert_array_equal(held, again_held)
    assert not np.array_equal(held, split_holdout(100, 0.1, seed=4)[1])
    with pytest.raises(ConfigError, match="at least 4"):
        split_holdout(3, 0.1, seed=0)


def test_data_folder_must_be_a_corpus_or_catalog(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither captions.csv"):
        load_pairs(tmp_path, None, {})


def test_command_line(corpus_world: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(train_clip_command.command)
    result = CliRunner().invoke(
        app,
        ["--data", str(corpus_world / "corpus"), "--out", str(tmp_path), "--model", "cliper-tiny",
         "--epochs", "1", "--seed", "1", "--column", "title=title"],
    )
    assert result.exit_code == 0, result.output
    assert "heldout image->text" in result.output and (tmp_path / "clip" / "checkpoint.pt").is_file()
    saved = json.loads((tmp_path / "clip" / "metrics.json").read_text())
    assert saved["config"]["seed"] == 1 and saved["config"]["columns"] == {"title": "title"}
    bad = CliRunner().invoke(app, ["--data", str(corpus_world / "corpus"), "--out", str(tmp_path), "--column", "genres"])
    assert bad.exit_code != 0 and "VIEW_COLUMN=CORPUS_COLUMN" in str(bad.exception)
