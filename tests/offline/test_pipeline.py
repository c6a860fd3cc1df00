"""offline pipeline: every stage into one folder, a verified bundle, unchanged stages reused."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cliper.bundle import read_bundle
from offline.cli import app
from offline.pipeline import STATE_FILE, Pipeline, PipelineConfig, PipelineError, folder_fingerprint, run_pipeline

STAGES = ["train-clip", "features", "evaluate", "refit", "export", "verify"]


def _config(world: Path, out: Path, **changes) -> PipelineConfig:
    return PipelineConfig(data=world, out=out, clip_model="cliper-tiny", profile="fast", **changes)


def _ran(results) -> list[str]:
    return [result.name for result in results if not result.reused]


@pytest.fixture(scope="module")
def first_run(synth_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("pipeline")
    return out, run_pipeline(_config(synth_world, out), echo=lambda line: None)


def test_first_run_runs_every_stage_and_leaves_a_verified_bundle(first_run) -> None:
    out, results = first_run
    assert [result.name for result in results] == STAGES and _ran(results) == STAGES
    assert read_bundle(out / "bundle").manifest.backbone == "freedom"
    assert (out / "clip" / "clip.json").is_file() and (out / "features" / "items.json").is_file()
    state = json.loads((out / STATE_FILE).read_text())
    assert list(state) == STAGES and state["verify"]["detail"] == "(11 checks passed)"


def test_the_fusion_is_chosen_on_validation_and_served(first_run) -> None:
    """Issue 18: the evaluation trains every fusion of the profile's grid (fast: the mean and a
    calibrated attention), the refit and the bundle take the best on validation, and the
    manifest records the grid."""
    out, _ = first_run
    choice = json.loads((out / "train" / "metrics.json").read_text())["fusion_choice"]
    assert [cell["mode"] for cell in choice["grid"]] == ["mean", "attention_calibrated"]
    best = max(choice["grid"], key=lambda cell: cell["valid_recall@20"])
    assert choice["chosen"] == {key: best[key] for key in ("mode", "tau", "alpha")}
    assert json.loads((out / "refit" / "metrics.json").read_text())["content_mode"] == best["mode"]
    fusion = read_bundle(out / "bundle").manifest.fusion
    assert fusion.mode == best["mode"] and [cell.valid_recall_at_20 for cell in fusion.grid] == [
        cell["valid_recall@20"] for cell in choice["grid"]
    ]


def test_unchanged_inputs_reuse_every_stage(first_run, synth_world: Path) -> None:
    out, _ = first_run
    version = read_bundle(out / "bundle").manifest.bundle_version
    assert _ran(run_pipeline(_config(synth_world, out), echo=lambda line: None)) == []
    assert read_bundle(out / "bundle").manifest.bundle_version == version


def test_a_changed_setting_reruns_only_the_stages_after_it(first_run, synth_world: Path) -> None:
    out, _ = first_run
    results = run_pipeline(_config(synth_world, out, index_factory="HNSW32"), echo=lambda line: None)
    assert _ran(results) == ["export", "verify"]
    assert read_bundle(out / "bundle").manifest.index.factory == "HNSW32"


def test_a_deleted_output_is_rebuilt(first_run, synth_world: Path) -> None:
    out, _ = first_run
    (out / "train" / "checkpoint.pt").unlink()
    results = run_pipeline(_config(synth_world, out, index_factory="HNSW32"), echo=lambda line: None)
    assert _ran(results) == ["evaluate", "refit", "export", "verify"]


def test_pretrained_weights_skip_train_clip(synth_world: Path, tmp_path: Path) -> None:
    pipeline = Pipeline(_config(synth_world, tmp_path, clip_pretrained="openai"), echo=lambda line: None)
    spec, _ = pipeline.train_clip()
    assert spec.pretrained == "openai" and spec.checkpoint is None
    assert pipeline.results[0].reused and "pretrained" in pipeline.results[0].detail
    assert not (tmp_path / "clip").exists()


def test_no_corpus_is_a_clear_error(synth_world: Path, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="no caption corpus .* --clip-pretrained"):
        Pipeline(_config(synth_world, tmp_path, corpus=tmp_path / "none"), echo=lambda line: None).train_clip()


def test_command_reports_the_stages(first_run, synth_world: Path) -> None:
    out, _ = first_run
    args = ["pipeline", "--data", str(synth_world), "--out", str(out), "--clip-model", "cliper-tiny", "--fast",
            "--index-factory", "HNSW32"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| evaluate | reused |" in result.output and f"verified bundle at {out / 'bundle'}" in result.output


def test_folder_fingerprint_sees_changes_and_skips_the_output(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "out").mkdir()
    before = folder_fingerprint(tmp_path, skip=tmp_path / "out")
    (tmp_path / "out" / "b.txt").write_text("written by the pipeline")
    assert folder_fingerprint(tmp_path, skip=tmp_path / "out") == before
    (tmp_path / "a.txt").write_text("two!")
    assert folder_fingerprint(tmp_path, skip=tmp_path / "out") != before


def test_corpus_columns_reach_train_clip(synth_world: Path, tmp_path: Path) -> None:
    """A corpus that names a view's column differently trains once the mapping is given."""
    corpus = tmp_path / "corpus"
    shutil.copytree(synth_world / "corpus", corpus)
    captions = pd.read_csv(corpus / "captions.csv", dtype=str, keep_default_na=False)
    captions.rename(columns={"categories": "category"}).to_csv(corpus / "captions.csv", index=False)
    pipeline = Pipeline(_config(synth_world, tmp_path / "out", corpus=corpus, corpus_columns={"categories": "category"}),
                        echo=lambda line: None)
    spec, _ = pipeline.train_clip()
    assert spec.checkpoint is not None and not pipeline.results[0].reused


def _sparse_copy(world: Path, folder: Path, timestamps: bool) -> Path:
    """The world with at most two interactions per item, some items never bought, as a shop's
    long tail looks: no item survives a 5-core filter."""
    shutil.copytree(world, folder, ignore=shutil.ignore_patterns("corpus"))
    frame = pd.read_csv(folder / "interactions.csv", dtype={"user_id": str, "item_id": str})
    sold = sorted(frame["item_id"].unique())[: int(0.8 * frame["item_id"].nunique())]
    frame = frame[frame["item_id"].isin(sold)].groupby("item_id").head(2)
    if not timestamps:
        frame = frame.drop(columns="timestamp")
    frame.to_csv(folder / "interactions.csv", index=False)
    return folder


def _assert_serves_the_whole_catalog(catalog: Path, out: Path) -> None:
    bundle = read_bundle(out / "bundle")
    items = pd.read_csv(catalog / "items.csv", dtype=str)["item_id"].tolist()
    interactions = pd.read_csv(catalog / "interactions.csv", dtype={"user_id": str, "item_id": str})
    assert sorted(bundle.item_ids) == sorted(items)  # bought or not, every catalog item
    assert sorted(bundle.user_ids) == sorted(interactions["user_id"].unique())
    row = {item: index for index, item in enumerate(bundle.item_ids)}
    for user, group in interactions.groupby("user_id"):  # seen = the whole history
        seen = set(bundle.seen.items_of(bundle.user_ids.index(user)).tolist())
        assert seen == {row[item] for item in group["item_id"]}
    assert bundle.manifest.training.data == "all_interactions"


def test_a_sparse_catalog_with_timestamps_evaluates_temporally_and_serves_everything(
    synth_world: Path, tmp_path: Path
) -> None:
    catalog = _sparse_copy(synth_world, tmp_path / "shop", timestamps=True)
    assert pd.read_csv(catalog / "interactions.csv")["item_id"].value_counts().max() < 5
    out = tmp_path / "out"
    run_pipeline(_config(catalog, out, corpus=synth_world / "corpus"), echo=lambda line: None)
    _assert_serves_the_whole_catalog(catalog, out)
    evaluation = json.loads((out / "train" / "metrics.json").read_text())
    assert evaluation["split"].startswith("temporal split")
    manifest = read_bundle(out / "bundle").manifest
    assert manifest.metrics["evaluation/test/recall@20"] == evaluation["test"]["recall@20"]
    assert manifest.training.epochs == evaluation["best_epoch"]


def test_a_catalog_that_cannot_be_evaluated_still_exports_and_says_why(synth_world: Path, tmp_path: Path) -> None:
    catalog = _sparse_copy(synth_world, tmp_path / "shop", timestamps=False)  # random split, 5-core: nothing
    out, said = tmp_path / "out", []
    run_pipeline(_config(catalog, out, corpus=synth_world / "corpus"), echo=said.append)
    assert any("[evaluate] not possible on this data: no interactions survive the 5-core filter" in line
               for line in said)
    _assert_serves_the_whole_catalog(catalog, out)
    manifest = read_bundle(out / "bundle").manifest
    assert "evaluation/test/recall@20" not in manifest.metrics
    assert manifest.fusion.mode == "attention" and manifest.fusion.grid is None  # no validation to choose on
