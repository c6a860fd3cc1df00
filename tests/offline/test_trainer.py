"""BPR training: negative sampling, early stopping, determinism, checkpoints, and `train`."""

import json

import numpy as np
import pytest
import torch
import typer
import yaml
from planted import World
from typer.testing import CliRunner

from offline.commands import train as train_command
from offline.data.split import SplitData
from offline.models import ContentFeatures, InteractionGraph, ModelSpec
from offline.train.evaluate import Evaluator, model_vectors
from offline.train.trainer import NegativeSampler, TrainConfig, load_checkpoint, train_model

WORLD = World(n_users=60, n_items=100)
FAST = TrainConfig(epochs=6, patience=6, batch_size=256, device="cpu")


@pytest.fixture(scope="module")
def split() -> SplitData:
    return WORLD.split()


@pytest.fixture(scope="module")
def content() -> ContentFeatures:
    return WORLD.content()


def test_negatives_exclude_training_positives_and_cold_items(split) -> None:
    graph = InteractionGraph.from_split(split)
    sampler = NegativeSampler(graph, np.random.default_rng(0))
    users = np.repeat(np.arange(split.n_users), 200)
    negatives = sampler.sample(users)
    positives = {tuple(pair) for pair in graph.edges.tolist()}
    assert not any((u, i) in positives for u, i in zip(users.tolist(), negatives.tolist()))
    assert not np.isin(negatives, split.cold_items).any()
    assert len(np.unique(negatives)) == split.n_items - len(split.cold_items)  # every warm item reachable


def test_sampler_refuses_a_user_who_saw_every_warm_item() -> None:
    train = np.array([[0, 0], [0, 1], [1, 0]])
    graph = InteractionGraph(2, 3, train, np.array([2]))
    with pytest.raises(ValueError, match="every warm item"):
        NegativeSampler(graph, np.random.default_rng(0))


def fit_freedom(split, content, config: TrainConfig = FAST, checkpoint=None, seed: int = 0):
    spec = ModelSpec(name="freedom", hparams={"learning_rate": 0.01})
    evaluator = Evaluator(split)
    graph = InteractionGraph.from_split(split)
    return train_model(spec, graph, content, evaluator, config, seed, checkpoint, progress=False)


def test_history_and_early_stopping(split, content) -> None:
    config = TrainConfig(epochs=60, patience=2, batch_size=256, device="cpu")
    _, result = fit_freedom(split, content, config)
    assert result.epochs_run == result.best_epoch + 2 or result.epochs_run == 60
    assert [log.epoch for log in result.history] == list(range(1, result.epochs_run + 1))
    best = max(log.valid_recall_at_20 for log in result.history)
    assert result.best_valid["recall@20"] == best == result.history[result.best_epoch - 1].valid_recall_at_20
    assert all(log.seconds > 0 and np.isfinite(log.loss) for log in result.history)


def test_training_is_deterministic_given_a_seed(split, content) -> None:
    losses = [[log.loss for log in fit_freedom(split, content, seed=3)[1].history] for _ in range(2)]
    assert losses[0] == losses[1]
    assert losses[0] != [log.loss for log in fit_freedom(split, content, seed=4)[1].history]


@pytest.mark.parametrize(("name", "mode"), [("freedom", "attention"), ("bm3", "mlp"), ("lightgcn", "none")])
def test_checkpoint_reloads_to_identical_scores(name, mode, split, content, tmp_path) -> None:
    from offline.train.trainer import Checkpoint

    spec = ModelSpec(name=name, content_mode=mode, hparams={"learning_rate": 0.01})
    graph = InteractionGraph.from_split(split)
    path = tmp_path / "checkpoint.pt"
    model, result = train_model(spec, graph, content, Evaluator(split), FAST, 0, Checkpoint(path, spec), progress=False)
    reloaded, info = load_checkpoint(path, graph, content)
    assert info["epoch"] == result.best_epoch
    assert info["spec"].hparams["learning_rate"] == 0.01 and "embedding_size" in info["spec"].hparams
    users = torch.arange(split.n_users)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.full_sort_predict(users), model.full_sort_predict(users), rtol=0, atol=0)
    assert Evaluator(split).evaluate_valid(model_vectors(reloaded)) == result.best_valid


@pytest.mark.parametrize("with_validation", [True, False])
def test_checkpoint_holds_the_fitted_cold_map_and_loads_without_refitting(
    with_validation, split, content, tmp_path, monkeypatch
) -> None:
    """Export must serve exactly the cold map evaluation measured (issue 14, item 12); the map
    is fitted by the explicit step after training, never by loading or eval mode (issue 18)."""
    from offline.models.cold_map import ColdMapNotFitted
    from offline.models.content import ContentRecommender
    from offline.train.trainer import Checkpoint

    spec = ModelSpec(name="freedom", hparams={"learning_rate": 0.01})
    graph = InteractionGraph.from_split(split)
    path = tmp_path / "checkpoint.pt"
    evaluator = Evaluator(split) if with_validation else None  # a refit has no validation
    model, _ = train_model(spec, graph, content, evaluator, FAST, 0, Checkpoint(path, spec), progress=False)
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert bool(saved["cold_map_fitted"]) and saved["id_map_weight"].abs().sum() > 0
    for name in ("id_map_weight", "id_map_bias", "cold_center", "cold_scale"):
        torch.testing.assert_close(saved[name], getattr(model, name), rtol=0, atol=0)

    def refit(self) -> None:
        raise AssertionError("loading a checkpoint refitted the cold map")

    monkeypatch.setattr(ContentRecommender, "fit_cold_map", refit)
    reloaded, _ = load_checkpoint(path, graph, content)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.item_vectors(), model.item_vectors(), rtol=0, atol=0)
    reloaded.train().eval()  # more training makes the map stale; eval mode does not refit it
    with pytest.raises(ColdMapNotFitted, match="fit_cold_map"):
        reloaded.item_vectors()


def test_a_checkpoint_saved_before_the_cold_map_was_fitted_is_refused(split, content, tmp_path) -> None:
    """A checkpoint written during training (at an improvement) has no fitted map: loading it
    says so instead of serving an unfitted cold path."""
    from offline.models import build_model
    from offline.train.trainer import Checkpoint

    spec = ModelSpec(name="freedom")
    graph = InteractionGraph.from_split(split)
    path = tmp_path / "checkpoint.pt"
    Checkpoint(path, spec).save(build_model(spec, graph, content), 1, {"recall@20": 0.0})
    with pytest.raises(ValueError, match="cold-start map was never fitted"):
        load_checkpoint(path, graph, content)


def test_train_command_writes_the_run_folder(tmp_path) -> None:
    catalog = WORLD.write_catalog(tmp_path / "catalog")
    features = WORLD.write_features(tmp_path / "features")
    config = tmp_path / "run.yaml"
    settings = {
        "data": "catalog",  # relative to the YAML's folder
        "features": "features",
        "model": "freedom",
        "content_mode": "attention",
        "model_overrides": {"learning_rate": 0.01},
        "epochs": 4,
        "patience": 4,
        "batch_size": 256,
        "split": {"k_core": 2, "cold_item_ratio": 0.2},
        "out": "ignored",
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    out = tmp_path / "run"
    app = typer.Typer()
    app.command()(train_command.command)
    result = CliRunner().invoke(app, ["--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "test recall@20" in result.output and "cold recall@20" in result.output
    for name in ("checkpoint.pt", "metrics.json", "history.json", "config.yaml", "split/split.npz"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for section in ("valid", "test"):
        assert {"recall@20", "ndcg@20", "precision@10", "map@50"} <= metrics[section].keys()
    assert {"all", "cold_only"} == metrics["cold"].keys()
    assert "recall@20" in metrics["popularity"]["test"]
    history = json.loads((out / "history.json").read_text())
    assert len(history) == metrics["epochs_run"]
    assert {"epoch", "loss", "valid_recall_at_20", "seconds"} <= history[0].keys()
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["content_mode"] == "attention" and written["data"] == str(catalog.resolve())

    # the saved split + the features folder rebuild the model with the same test metrics
    saved = SplitData.load(out / "split")
    graph = InteractionGraph.from_split(saved)
    model, _ = load_checkpoint(out / "checkpoint.pt", graph, ContentFeatures.load(features, saved.item_ids))
    assert Evaluator(saved).evaluate_test(model_vectors(model)) == pytest.approx(metrics["test"])
