"""Issue 18's bundle: a calibrated attention's statistics reach the manifest and the item tower,
and the service's view weights for a new item are the offline model's."""

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from fusion_weights import cosines, manifest_view_weights

from cliper.bundle import ITEM_TOWER, read_bundle
from offline.data.catalog import load_catalog
from offline.export.bundle import ExportConfig, export_bundle, load_run
from offline.export.onnx_export import cpu_session
from service.app import create_app
from service.config import Settings


@pytest.fixture(scope="module")
def bundle(calibrated_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("calibrated") / "bundle"
    export_bundle(calibrated_run, out, ExportConfig(fp16=False, thumbnails=False))
    return out


def test_calibration_statistics_round_trip_through_the_bundle(calibrated_run: Path, bundle: Path) -> None:
    """A calibrated attention's per-view cosine statistics (over the training items) are in the
    manifest and in the item tower, whose view weights follow from them."""
    loaded, run = read_bundle(bundle), load_run(calibrated_run)
    fusion = loaded.manifest.fusion
    assert (fusion.mode, fusion.tau, fusion.alpha) == ("attention_calibrated", 0.5, 0.5)
    warm = np.setdiff1d(np.arange(run.split.n_items), run.split.cold_items)
    training = cosines(run.content.image.numpy()[warm], run.content.text_views.numpy()[warm])
    np.testing.assert_allclose(fusion.view_cosine_mean, training.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(fusion.view_cosine_std, training.std(axis=0), atol=1e-6)
    assert fusion.grid is None  # chosen by hand, not on validation
    # the stored weights of every item and the tower's weights of new content follow from the manifest
    image, views = run.content.image.numpy(), run.content.text_views.numpy()
    np.testing.assert_allclose(loaded.view_weights, manifest_view_weights(image, views, fusion), atol=1e-5)
    tower = cpu_session(bundle / ITEM_TOWER)
    rng = np.random.default_rng(3)
    new_image = rng.standard_normal((5, image.shape[1])).astype(np.float32)
    new_views = rng.standard_normal((5, views.shape[1], views.shape[2])).astype(np.float32)
    _, weights = tower.run(None, {"image_features": new_image, "text_view_features": new_views})
    np.testing.assert_allclose(weights, manifest_view_weights(new_image, new_views, fusion), atol=1e-5)


def test_the_services_view_weights_for_a_new_item_equal_the_offline_ones(
    calibrated_run: Path, bundle: Path, tmp_path: Path
) -> None:
    """The service takes a new item's view weights from the item tower, in which the calibrated
    attention's statistics are baked, so they are the offline model's weights (and follow from
    the manifest's record)."""
    run = load_run(calibrated_run)
    catalog = load_catalog(Path(run.config.data), run.views)
    served = {}
    with TestClient(create_app(Settings(bundle=bundle, data_dir=tmp_path / "data"))) as client:
        for position in run.split.cold_items[:3].tolist():
            item_id = run.split.item_ids[position]
            row = catalog.items.index[catalog.items["item_id"] == item_id][0]
            fields = {column: str(catalog.items.at[row, column]) for column in run.views.columns
                      if str(catalog.items.at[row, column])}
            created = client.post("/items", data={"item_id": "new-" + item_id, **fields},
                                  files={"image": ("item.jpg", catalog.image_file(row).read_bytes(), "image/jpeg")})
            assert created.status_code == 201, created.text
            weights = client.get(f"/items/new-{item_id}").json()["view_weights"]
            served[position] = [weights[view] for view in run.views.view_names]
    positions = list(served)
    image, views = run.content.image[positions], run.content.text_views[positions]
    with torch.no_grad():
        offline = run.model.content_view_weights(image, views).numpy()
    np.testing.assert_allclose(np.asarray(list(served.values())), offline, atol=1e-4)
    manifest = read_bundle(bundle).manifest
    np.testing.assert_allclose(offline, manifest_view_weights(image.numpy(), views.numpy(), manifest.fusion), atol=1e-5)
