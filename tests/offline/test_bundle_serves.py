"""Offline job -> exported bundle -> service: the service's vector for an item equals the offline one;
new users get the popularity fallback; a refit bundle excludes every user's whole history."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from tiny_run import train_tiny_run

from offline.data.catalog import load_catalog
from offline.export.bundle import ExportConfig, export_bundle, load_run
from offline.train.run import RunConfig, refit_run
from service.app import create_app
from service.config import Settings


@pytest.fixture(scope="module")
def bundle(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("served") / "bundle"
    export_bundle(tiny_run, out, ExportConfig(fp16=False))
    return out


def test_ingested_item_vector_equals_the_offline_content_vector(
    tiny_run: Path, bundle: Path, tmp_path: Path
) -> None:
    run = load_run(tiny_run)
    catalog = load_catalog(Path(run.config.data), run.views)
    item_id = run.split.item_ids[int(run.split.cold_items[0])]
    row = catalog.items.set_index("item_id").loc[item_id]
    image_bytes = catalog.image_file(catalog.items.index[catalog.items["item_id"] == item_id][0]).read_bytes()
    fields = {column: str(row[column]) for column in run.views.columns if str(row[column])}
    position = run.split.item_ids.index(item_id)
    with torch.no_grad():
        expected = run.model.content_item_vectors(
            run.content.image[position : position + 1], run.content.text_views[position : position + 1]
        )[0].numpy()

    settings = Settings(bundle=bundle, data_dir=tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        created = client.post(
            "/items",
            data={"item_id": "copy-of-" + item_id, **fields},
            files={"image": ("item.jpg", image_bytes, "image/jpeg")},
        )
        assert created.status_code == 201, created.text
        served = client.get(f"/items/copy-of-{item_id}", params={"include_vector": "true"}).json()["vector"]
        bundled = client.get(f"/items/{item_id}", params={"include_vector": "true"}).json()["vector"]

    np.testing.assert_allclose(np.asarray(served), expected, atol=1e-4, rtol=1e-4)
    # a cold item's bundled vector came from the same content path offline
    np.testing.assert_allclose(np.asarray(bundled), expected, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def late_world(synth_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world plus a user whose only interactions come after the temporal cut-off."""
    world = tmp_path_factory.mktemp("late_world")
    shutil.copytree(synth_world, world, dirs_exist_ok=True)
    frame = pd.read_csv(world / "interactions.csv", dtype={"user_id": str, "item_id": str})
    late = frame.head(3).assign(user_id="late-user", timestamp=frame["timestamp"].max())
    pd.concat([frame, late]).to_csv(world / "interactions.csv", index=False)
    return world


@pytest.fixture(scope="module")
def evaluation_and_refit(late_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An evaluation run on `late_world` and its refit on every interaction."""
    evaluation = train_tiny_run(late_world, tmp_path_factory.mktemp("late_run"))
    metrics = json.loads((evaluation / "metrics.json").read_text())
    refit = evaluation.parent / "refit"
    refit_run(RunConfig.from_yaml(evaluation / "config.yaml"), refit, metrics, progress=False)
    return evaluation, refit


def _recommend(bundle: Path, data_dir: Path, users: list[str], k: int) -> dict[str, dict]:
    with TestClient(create_app(Settings(bundle=bundle, data_dir=data_dir))) as client:
        return {user: client.get(f"/users/{user}/recommendations", params={"k": k}).json() for user in users}


def test_a_user_with_no_training_interaction_gets_the_flagged_popularity_fallback(
    evaluation_and_refit: tuple[Path, Path], tmp_path: Path
) -> None:
    evaluation, _ = evaluation_and_refit
    run = load_run(evaluation)
    assert "late-user" in run.split.new_user_ids and "late-user" not in run.split.user_ids
    export_bundle(evaluation, tmp_path / "bundle", ExportConfig(fp16=False))
    served = _recommend(tmp_path / "bundle", tmp_path / "data", ["late-user", run.split.user_ids[0]], 10)
    assert served["late-user"]["fallback"] is True
    assert served[run.split.user_ids[0]]["fallback"] is False


def test_the_refit_bundle_never_recommends_anything_from_a_users_history(
    late_world: Path, evaluation_and_refit: tuple[Path, Path], tmp_path: Path
) -> None:
    """Including what evaluation held out (valid, test, new items) and the late user's history."""
    _, refit = evaluation_and_refit
    export_bundle(refit, tmp_path / "bundle", ExportConfig(fp16=False))
    history = pd.read_csv(late_world / "interactions.csv", dtype={"user_id": str, "item_id": str})
    by_user = history.groupby("user_id")["item_id"].apply(set)
    served = _recommend(tmp_path / "bundle", tmp_path / "data", list(by_user.index), 1000)
    n_items = len(pd.read_csv(late_world / "items.csv"))
    for user, items in by_user.items():
        answer = served[user]
        assert answer["fallback"] is False, user
        recommended = {entry["item_id"] for entry in answer["items"]}
        assert not recommended & items, user
        assert len(recommended) == n_items - len(items)  # everything else is a candidate
