"""Offline job -> exported bundle -> service: the service's vector for an item equals the offline one."""

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from offline.data.catalog import load_catalog
from offline.export.bundle import ExportConfig, export_bundle, load_run
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
