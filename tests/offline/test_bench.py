"""The benchmark grid, its summary statistics, the report files and the `bench` command."""

import json

import pytest
import typer
import yaml
from planted import World
from typer.testing import CliRunner

from offline.commands import bench as bench_command
from offline.train.bench import grid, machine, summarise

WORLD = World(n_users=60, n_items=100)


def test_grid_pairs_id_models_with_none_only() -> None:
    content = WORLD.content()
    specs = grid(["bpr", "freedom"], ["none", "image", "global", "attention"], content, tau=0.2)
    assert [(s.name, s.content_mode) for s in specs] == [
        ("bpr", "none"),
        ("freedom", "image"),
        ("freedom", "global"),
        ("freedom", "attention"),
    ]
    without_global = grid(["freedom"], ["global", "mean"], content.without_view("global"), tau=0.2)
    assert [s.content_mode for s in without_global] == ["mean"]
    with pytest.raises(ValueError, match="no usable"):
        grid(["bpr"], ["attention"], content, tau=0.2)


def test_summary_is_mean_and_std_over_seeds() -> None:
    def record(seed: int, recall: float) -> dict:
        metrics = {"recall@20": recall, "ndcg@20": 0.1, "recall@50": 0.2}
        return {
            "model": "bpr", "content_mode": "none", "label": "none", "seed": seed, "test": metrics, "cold": None,
            "epochs_run": 10 + seed, "best_epoch": 5, "seconds_per_epoch": 1.0, "seconds": 10.0,
        }  # fmt: skip

    (row,) = summarise([record(0, 0.2), record(1, 0.4)])
    assert row["seeds"] == 2
    assert row["test.recall@20"]["mean"] == pytest.approx(0.3)
    assert row["test.recall@20"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert row["cold.all.recall@20"] is None
    assert row["epochs_run"]["mean"] == 10.5


def test_machine_names_cpu_and_torch() -> None:
    info = machine()
    assert info["cpu"] and info["cores"] >= 1 and info["torch"]


def test_bench_command_writes_report(tmp_path) -> None:
    catalog = WORLD.write_catalog(tmp_path / "catalog")
    features = WORLD.write_features(tmp_path / "features")
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({"split": {"k_core": 2}, "train": {"batch_size": 256}}), encoding="utf-8")
    out = tmp_path / "bench"
    app = typer.Typer()
    app.command()(bench_command.command)
    args = ["--data", str(catalog), "--features", str(features), "--out", str(out), "--config", str(config)]
    args += ["--models", "bpr,freedom", "--modes", "none,image,attention", "--seeds", "2", "--max-epochs", "3"]
    args += ["--split", "random"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    report = json.loads((out / "bench.json").read_text())
    assert [(row["model"], row["label"], row["seeds"]) for row in report["rows"]] == [
        ("bpr", "none", 2),
        ("freedom", "image", 2),
        ("freedom", "attention", 2),
    ]
    assert all(run["epochs_run"] <= 3 for run in report["runs"])
    assert report["rows"][0]["cold.all.recall@20"] is None
    assert report["rows"][2]["cold.cold_only.recall@20"]["mean"] > 0
    assert report["ablation_model"] == "freedom"
    ablation = [row["label"] for row in report["ablation_rows"]]
    views = ("title", "brand", "categories", "description", "global")
    assert ablation == ["attention"] + [f"attention -{view}" for view in views]
    assert "recall@20" in report["popularity"]["test"]

    markdown = (out / "bench.md").read_text()
    assert report["machine"]["cpu"] in markdown and "popularity" in markdown and "± " in markdown
    assert "Per-view ablation" in markdown and "attention -brand" in markdown
    assert (out / "valid_recall.png").stat().st_size > 1000
