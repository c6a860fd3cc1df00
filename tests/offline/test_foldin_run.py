"""The fold-in measurement on a temporal evaluation run and the bundle exported from it."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cliper.bundle import read_bundle
from offline.cli import app
from offline.config import ConfigError
from offline.export.bundle import ExportConfig, export_bundle, load_run
from offline.train.foldin import split_test_period
from offline.train.foldin_run import measure_fold_in, retrain_history, later_interactions
from offline.train.run import RunConfig, refit_run


@pytest.fixture(scope="module")
def run_and_bundle(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    bundle = tmp_path_factory.mktemp("foldin") / "bundle"
    export_bundle(tiny_run, bundle, ExportConfig(fp16=False))
    return tiny_run, bundle


def test_the_test_period_is_the_catalogs_interactions_from_the_cut_off_on(run_and_bundle) -> None:
    run_dir, bundle_dir = run_and_bundle
    run, bundle = load_run(run_dir), read_bundle(bundle_dir)
    catalog = run.load_catalog()
    test, unknown = later_interactions(run, catalog, bundle)
    raw = catalog.interactions.assign(timestamp=catalog.interactions["timestamp"].astype(np.int64))
    later = raw[raw["timestamp"] >= run.split.stats["test_from"]].drop_duplicates(["user_id", "item_id"])
    user_ids = bundle.user_ids + unknown
    got = {(user_ids[u], bundle.item_ids[i], t) for u, i, t in test.tolist()}
    # every later pair once (a pair first seen before the cut-off was deduplicated by the split)
    first_seen = raw.sort_values("timestamp", kind="stable").drop_duplicates(["user_id", "item_id"])
    expected = first_seen[first_seen["timestamp"] >= run.split.stats["test_from"]]
    assert got == set(expected[["user_id", "item_id", "timestamp"]].itertuples(index=False, name=None))
    assert len(got) <= len(later) and len(test) == len(got)
    assert all(user not in bundle.user_ids for user in unknown)


def test_the_retrain_learns_the_training_period_and_the_folded_halves_only(run_and_bundle) -> None:
    run_dir, bundle_dir = run_and_bundle
    run, bundle = load_run(run_dir), read_bundle(bundle_dir)
    catalog = run.load_catalog()
    test, unknown = later_interactions(run, catalog, bundle)
    history = retrain_history(run, catalog, bundle, test, unknown)
    pairs = set(history.itertuples(index=False, name=None))
    cases = split_test_period(test, bundle.seen)
    user_ids = bundle.user_ids + unknown
    folded = {(user_ids[u], bundle.item_ids[i]) for u, items in zip(cases.users, cases.folded) for i in items}
    targets = {(user_ids[u], bundle.item_ids[i]) for u, items in zip(cases.users, cases.targets) for i in items}
    training = {(run.split.user_ids[u], run.split.item_ids[i]) for u, i in run.split.train.tolist()}
    assert folded and targets
    assert pairs == training | folded
    assert not pairs & targets
    valid = {(run.split.user_ids[u], run.split.item_ids[i]) for u, i in run.split.valid.tolist()}
    assert not pairs & (valid - folded)


def test_the_report_compares_every_method_for_warm_users(run_and_bundle, tmp_path: Path) -> None:
    run_dir, bundle_dir = run_and_bundle
    result = CliRunner().invoke(app, ["foldin", "--run", str(run_dir), "--bundle", str(bundle_dir),
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = pd.read_json(tmp_path / "foldin.json", typ="series")
    warm = report["warm"]
    assert warm["users"] > 0
    assert set(warm) == {"users", "stale", "mean", "least_squares", "retrain", "popularity"}
    for method in ("stale", "mean", "least_squares", "retrain", "popularity"):
        assert 0.0 <= warm[method]["recall@20"] <= 1.0
    assert "| retrain |" in result.output


def test_a_refit_bundle_is_refused(run_and_bundle, tmp_path: Path) -> None:
    """Fold-in is measured against the stale evaluation model, not a model that saw the test period."""
    run_dir, _ = run_and_bundle
    metrics = json.loads((run_dir / "metrics.json").read_text())
    refit_run(RunConfig.from_yaml(run_dir / "config.yaml"), tmp_path / "refit", metrics, progress=False)
    export_bundle(tmp_path / "refit", tmp_path / "bundle", ExportConfig(fp16=False))
    with pytest.raises(ConfigError, match="was not exported from"):
        measure_fold_in(run_dir, tmp_path / "bundle", progress=False)
