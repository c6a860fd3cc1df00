"""Issue 18: the fusion chosen on validation (grid, run, refit, bench) and the view-weight
diagnostics (mean weight, share below half the uniform weight, lying and truthful fields)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from planted import World

from offline.clip.alignment import format_weight_summary, planted_lies, weight_summary
from offline.data.split import SplitData
from offline.models import InteractionGraph, ModelSpec
from offline.train.bench import BenchConfig, run_bench
from offline.train.evaluate import Evaluator, model_vectors
from offline.train.fusion_grid import FusionGrid, describe, label
from offline.train.run import RunConfig, load_content, refit_run, train_run
from offline.train.trainer import TrainConfig, load_checkpoint

SMALL_GRID = FusionGrid(taus=[0.5], alphas=[0.0, 1.0], calibration=[False, True])
WORLD = World(n_users=60, n_items=100)


def test_the_grid_prunes_duplicates_and_puts_the_mean_first() -> None:
    base = ModelSpec(name="freedom", hparams={"knn_k": 3, "view_alpha": 0.3})
    cells = [describe(spec) for spec in FusionGrid().candidates(base)]
    assert cells[0] == {"mode": "mean", "tau": None, "alpha": None}  # alpha 0: one cell whatever tau
    assert len(cells) == 1 + 2 * 3 * 2 and len({label(cell) for cell in cells}) == len(cells)
    assert {cell["mode"] for cell in cells[1:]} == {"attention", "attention_calibrated"}
    assert {(cell["tau"], cell["alpha"]) for cell in cells[1:]} == {(t, a) for t in (0.1, 0.5, 1.0) for a in (0.5, 1.0)}
    assert all(spec.hparams["knn_k"] == 3 for spec in FusionGrid().candidates(base))
    twice = FusionGrid(taus=[0.5, 0.5], alphas=[1.0, 1.0], calibration=[True, True]).candidates(base)
    assert [describe(spec) for spec in twice] == [{"mode": "attention_calibrated", "tau": 0.5, "alpha": 1.0}]
    with pytest.raises(ValueError, match="alphas"):
        FusionGrid(alphas=[1.5])


@pytest.fixture(scope="module")
def validated(synth_world: Path, calibrated_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `validated` FREEDOM run on the tiny synthetic world (whose descriptions lie), small grid."""
    out = tmp_path_factory.mktemp("validated")
    config = RunConfig(data=synth_world, features=calibrated_run.parent / "features", content_mode="validated",
                       fusion_grid=SMALL_GRID, epochs=4, patience=4, out=out / "train")
    train_run(config, progress=False)
    return out / "train"


def test_a_validated_run_keeps_the_grid_cell_best_on_validation(validated: Path, synth_world: Path) -> None:
    metrics = json.loads((validated / "metrics.json").read_text())
    choice = metrics["fusion_choice"]
    grid = choice["grid"]
    assert [cell["mode"] for cell in grid] == ["mean", "attention", "attention_calibrated"]
    scores = [cell["valid_recall@20"] for cell in grid]
    best = grid[int(np.argmax(scores))]  # the first of equal scores: the mean wins a tie
    assert [cell["chosen"] for cell in grid] == [cell is best for cell in grid]
    assert choice["chosen"] == {key: best[key] for key in ("mode", "tau", "alpha")}
    assert metrics["content_mode"] == best["mode"] and metrics["valid"]["recall@20"] == best["valid_recall@20"]
    # the checkpoint holds the chosen model: it scores the recorded validation recall again
    config = RunConfig.from_yaml(validated / "config.yaml")
    assert config.content_mode == best["mode"]  # the config names the chosen fusion
    split = SplitData.load(validated / "split")
    model, saved = load_checkpoint(validated / "checkpoint.pt", InteractionGraph.from_split(split),
                                   load_content(config.features, split))
    assert saved["spec"].content_mode == best["mode"]
    assert Evaluator(split).evaluate_valid(model_vectors(model))["recall@20"] == pytest.approx(best["valid_recall@20"])
    # the diagnostics: every view, and the lying descriptions of the synthetic world
    weights = metrics["view_weights"]
    assert set(weights) == set(metrics["views"]) and "lying" in weights["description"]


def test_the_refit_takes_the_chosen_fusion_and_the_bundle_records_the_grid(
    validated: Path, tmp_path: Path
) -> None:
    from cliper.bundle import read_bundle
    from offline.export.bundle import ExportConfig, export_bundle

    evaluation = json.loads((validated / "metrics.json").read_text())
    config = RunConfig.from_yaml(validated / "config.yaml").model_copy(update={"content_mode": "validated"})
    refit = refit_run(config, tmp_path / "refit", evaluation, progress=False)
    chosen = evaluation["fusion_choice"]["chosen"]
    assert refit["content_mode"] == chosen["mode"] and refit["fusion_choice"] == evaluation["fusion_choice"]
    export_bundle(tmp_path / "refit", tmp_path / "bundle", ExportConfig(fp16=False, thumbnails=False))
    fusion = read_bundle(tmp_path / "bundle").manifest.fusion
    assert (fusion.mode, fusion.tau, fusion.alpha) == (chosen["mode"], chosen["tau"], chosen["alpha"])
    cells = evaluation["fusion_choice"]["grid"]
    assert [(c.mode, c.tau, c.alpha, c.valid_recall_at_20) for c in fusion.grid] == [
        (cell["mode"], cell["tau"], cell["alpha"], cell["valid_recall@20"]) for cell in cells
    ]


def test_a_refit_by_hand_from_the_evaluation_folder_keeps_its_choice(validated: Path, tmp_path: Path) -> None:
    """`offline refit --run RUN` reads RUN's config.yaml, which names the chosen fusion."""
    evaluation = json.loads((validated / "metrics.json").read_text())
    refit = refit_run(RunConfig.from_yaml(validated / "config.yaml"), tmp_path / "refit", evaluation, progress=False)
    assert refit["content_mode"] == evaluation["fusion_choice"]["chosen"]["mode"]
    assert refit["fusion_choice"] == evaluation["fusion_choice"]


def test_a_refit_without_evaluation_falls_back_to_the_papers_attention(validated: Path, tmp_path: Path) -> None:
    config = RunConfig.from_yaml(validated / "config.yaml").model_copy(update={"content_mode": "validated"})
    refit = refit_run(config, tmp_path / "refit", "too few interactions", progress=False)
    assert refit["content_mode"] == "attention" and "skipped" in refit["fusion_choice"]


def test_weight_summary_counts_items_below_half_the_uniform_weight() -> None:
    weights = np.array([[0.05, 0.45, 0.5], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3], [0.5, 0.25, 0.25]])
    lying = np.array([True, False, True, False])
    summary = weight_summary(weights, ("a", "b", "c"), {"a": (lying, ~lying)})
    # uniform 1/3, half of it 1/6: a is below it for rows 0 and 2
    assert summary["a"]["mean"] == pytest.approx(0.2125) and summary["a"]["below_half_uniform"] == 0.5
    assert summary["a"]["lying"] == {"mean": pytest.approx(0.075), "below_half_uniform": 1.0, "items": 2}
    assert summary["a"]["truthful"] == {"mean": pytest.approx(0.35), "below_half_uniform": 0.0, "items": 2}
    assert summary["b"]["below_half_uniform"] == 0.0 and "lying" not in summary["b"]
    lines = format_weight_summary(summary, "test")
    assert len(lines) == 2 + 3 + 3 and "0.167" in lines[0] and lines[-1].split() == ["a", "0.075", "1.000", "2",
                                                                                    "0.350", "0.000", "2"]


def test_planted_lies_come_from_the_synthetic_worlds_noise(synth_world: Path) -> None:
    noise = pd.read_csv(synth_world / "noise.csv", dtype={"item_id": str})
    order = noise["item_id"].tolist()[::-1]  # any order of items
    lies = planted_lies(synth_world, order, ("title", "brand", "description", "global"))
    assert set(lies) == {"description"}  # the default world lies in descriptions only
    lying, truthful = lies["description"]
    by_id = noise.set_index("item_id").loc[order]
    assert (lying == by_id["description_misleading"].to_numpy()).all()
    assert (truthful == ~(by_id["description_misleading"] | by_id["description_empty"]).to_numpy()).all()
    assert planted_lies(synth_world / "corpus", order, ("title",)) is None  # no noise.csv: no lies


def test_the_bench_records_the_grid_and_the_validated_choice(tmp_path: Path) -> None:
    catalog = WORLD.write_catalog(tmp_path / "catalog")
    features = WORLD.write_features(tmp_path / "features")
    cfg = BenchConfig(data=catalog, features=features, out=tmp_path / "bench", models=["freedom"],
                      modes=["global", "validated"], seeds=2, fusion_grid=SMALL_GRID, ablation=False,
                      split={"method": "random", "k_core": 2},
                      train=TrainConfig(epochs=2, patience=2, batch_size=256, device="cpu"))
    report = run_bench(cfg)
    labels = [row["label"] for row in report["rows"]]
    assert labels == ["global", "grid mean", "grid attention t=0.5 a=1", "grid attention_calibrated t=0.5 a=1",
                      "validated"]
    assert all(row["seeds"] == 2 for row in report["rows"])
    for seed in (0, 1):
        cells = [run for run in report["runs"] if run["seed"] == seed and run["label"].startswith("grid ")]
        (chosen,) = [run for run in report["runs"] if run["seed"] == seed and run["label"] == "validated"]
        best = max(cells, key=lambda run: run["valid"]["recall@20"])
        assert chosen["chosen"]["mode"] == best["content_mode"] and chosen["test"] == best["test"]
    assert "Fusions validation chose" in (tmp_path / "bench" / "bench.md").read_text()


def test_features_report_plain_and_calibrated_weights_with_the_lies(calibrated_run: Path, synth_world: Path) -> None:
    """`features` writes (and prints) per view the mean weight and the share below half the
    uniform weight, for plain and calibrated attention, over lying and truthful descriptions."""
    from fusion_weights import cosines

    from offline.clip.features import Features

    folder = calibrated_run.parent / "features"
    report = json.loads((folder / "alignment.json").read_text())
    features = Features.load(folder)
    image, views = features.image, features.text_views.transpose(1, 0, 2)
    z = cosines(image, views)
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    weights = np.exp(z - z.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    noise = pd.read_csv(synth_world / "noise.csv", dtype={"item_id": str}).set_index("item_id")
    lying = noise.loc[features.meta["item_ids"], "description_misleading"].to_numpy()
    for v, view in enumerate(features.meta["views"]):
        assert report[view]["calibrated"]["mean"] == pytest.approx(weights[:, v].mean(), abs=1e-5)
        below = (weights[:, v] < 0.5 / len(features.meta["views"])).mean()
        assert report[view]["calibrated"]["below_half_uniform"] == pytest.approx(below, abs=1e-9)
    description = features.meta["views"].index("description")
    assert report["description"]["calibrated"]["lying"]["mean"] == pytest.approx(
        weights[lying, description].mean(), abs=1e-5)
    assert report["description"]["attention"]["lying"]["items"] == lying.sum()


def test_the_train_command_prints_the_choice_and_the_weights(
    synth_world: Path, calibrated_run: Path, tmp_path: Path
) -> None:
    import typer
    from typer.testing import CliRunner

    from offline.commands import train as train_command

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "data": str(synth_world), "features": str(calibrated_run.parent / "features"), "content_mode": "validated",
        "fusion_grid": SMALL_GRID.model_dump(), "epochs": 2, "patience": 2, "out": str(tmp_path / "run"),
    }), encoding="utf-8")
    app = typer.Typer()
    app.command()(train_command.command)
    result = CliRunner().invoke(app, ["--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "fusion chosen on validation recall@20: " in result.output
    assert "attention_calibrated t=0.5 a=1" in result.output and "  <-" in result.output
    assert "share of items below half the uniform weight" in result.output and "planted lies" in result.output
