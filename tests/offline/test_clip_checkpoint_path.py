"""The path of a user with real CLIP weights, end to end: an open_clip checkpoint file (here a
random-init cliper-tiny written by scripts/make_random_clip.py; docs/benchmarks.md runs the same
with ViT-B-32) -> `features --clip MODEL --pretrained FILE` -> export with int8 and fp16 twins ->
verify -> the service at each precision."""

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from tiny_run import TINY_CLIP
from typer.testing import CliRunner

from cliper.bundle import IMAGE_ENCODER, ITEM_TOWER, TEXT_ENCODER, BundleError, fp16_variant, int8_variant, read_bundle
from cliper.images import preprocess
from offline.cli import app
from offline.clip.features import Features
from offline.clip.model import ClipSpec, load_clip, preprocess_config, register_configs
from offline.data.catalog import Catalog, load_catalog
from offline.data.images import ImageLoader
from offline.export.bundle import load_run, usable_image
from offline.train.run import RunConfig, train_run
from service.app import create_app
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
MODEL = TINY_CLIP.model
QUERY = "a red striped ceramic mug"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("weights") / "open_clip_pytorch_model.bin"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_random_clip.py"), "--model", MODEL, "--out", str(out)],
                   check=True, cwd=ROOT, capture_output=True)
    return out


@pytest.fixture(scope="module")
def run(synth_world: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m offline features` with the checkpoint file, then FREEDOM for 3 epochs."""
    out = tmp_path_factory.mktemp("checkpoint_run")
    result = CliRunner().invoke(
        app, ["features", "--data", str(synth_world), "--out", str(out), "--clip", MODEL, "--pretrained", str(checkpoint)]
    )
    assert result.exit_code == 0, result.output
    train_run(RunConfig(data=synth_world, features=out / "features", model="freedom", epochs=3, out=out / "train"),
              progress=False)
    return out


@pytest.fixture(scope="module")
def bundle(run: Path) -> Path:
    out = run / "bundle"
    result = CliRunner().invoke(
        app, ["export", "--run", str(run / "train"), "--out", str(out), "--int8", "--fp16", "--no-thumbnails"]
    )
    assert result.exit_code == 0, result.output
    assert "graphs fp32 + fp16 + int8 encoders" in result.output
    return out


def test_features_come_from_the_checkpoint_file(synth_world: Path, checkpoint: Path, run: Path) -> None:
    features = Features.load(run / "features")
    identity = features.meta["clip"]
    assert identity["pretrained"] == str(checkpoint)
    assert identity["weights_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    # open_clip's own model with the file's weights, not through load_clip
    register_configs()
    model = open_clip.create_model(MODEL).eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    row, image = _item_with_image(load_catalog(synth_world), features.item_ids)
    pixels = preprocess(image, preprocess_config(model))
    with torch.no_grad():
        expected = model.encode_image(torch.from_numpy(pixels[None])).numpy()[0]
    position = features.item_ids.index(row["item_id"])
    np.testing.assert_allclose(features.image[position], expected, atol=1e-4)
    default_init = load_clip(TINY_CLIP).encode_images(pixels[None])[0]  # the file is not the default random init
    assert np.abs(default_init - expected).max() > 0.1


def _item_with_image(catalog: Catalog, item_ids: list[str]) -> tuple[dict, Image.Image]:
    """The first catalog row among `item_ids` with a usable image (the synthetic world breaks a few)."""
    loader = ImageLoader()
    for row in catalog.items.to_dict("records"):
        image = usable_image(loader, catalog, row) if row["item_id"] in item_ids else None
        if image is not None:
            return row, image
    raise AssertionError("no item with a usable image")


def test_export_writes_the_twins_asked_for_and_verify_passes(bundle: Path) -> None:
    files = set(read_bundle(bundle).manifest.files)
    assert {int8_variant(IMAGE_ENCODER), int8_variant(TEXT_ENCODER)} <= files
    assert {fp16_variant(graph) for graph in (IMAGE_ENCODER, TEXT_ENCODER, ITEM_TOWER)} <= files
    assert int8_variant(ITEM_TOWER) not in files
    result = CliRunner().invoke(app, ["verify", str(bundle), "--items", "8", "--users", "8"])
    assert result.exit_code == 0, result.output


@dataclass
class Served:
    graph_files: dict[str, str]  # the file serving each graph
    vector: np.ndarray  # of an ingested copy of the item
    image: np.ndarray  # the unit CLIP embedding of its image
    text: np.ndarray  # the unit CLIP embedding of QUERY


def _serve(bundle: Path, data_dir: Path, precision: str, item: dict, image: bytes) -> Served:
    """What the service at `precision` makes of a copy of `item` (fields and image bytes) and of QUERY."""
    with TestClient(create_app(Settings(bundle=bundle, data_dir=data_dir, precision=precision))) as client:
        encoder = client.app.state.services.encoder
        created = client.post("/items", data={**item, "item_id": f"copy-{item['item_id']}"},
                              files={"image": ("item.jpg", image, "image/jpeg")})
        assert created.status_code == 201, created.text
        vector = client.get(f"/items/copy-{item['item_id']}", params={"include_vector": "true"}).json()["vector"]
        return Served(encoder.graph_files, np.asarray(vector, dtype=np.float32),
                      encoder.embed_image(encoder.decode(image)), encoder.embed_text(QUERY))


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def test_the_service_serves_fp32_and_int8_and_refuses_fp16_on_cpu(
    run: Path, bundle: Path, checkpoint: Path, tmp_path: Path
) -> None:
    trained = load_run(run / "train")
    catalog = load_catalog(Path(trained.config.data), trained.views)
    row, _ = _item_with_image(catalog, trained.split.item_ids)
    item = {"item_id": row["item_id"], **{column: str(row[column]) for column in trained.views.columns}}
    image = catalog.image_file(row).read_bytes()
    position = trained.split.item_ids.index(row["item_id"])
    with torch.no_grad():  # the offline path, from the checkpoint's features
        vector = trained.model.content_item_vectors(trained.content.image[position : position + 1],
                                                    trained.content.text_views[position : position + 1])[0].numpy()
    features = Features.load(run / "features")
    offline_image = _unit(features.image[features.item_ids.index(row["item_id"])])
    offline_text = _unit(load_clip(ClipSpec(model=MODEL, pretrained=str(checkpoint))).encode_texts([QUERY])[0])

    fp32 = _serve(bundle, tmp_path / "fp32", "fp32", item, image)
    assert fp32.graph_files == {IMAGE_ENCODER: IMAGE_ENCODER, TEXT_ENCODER: TEXT_ENCODER, ITEM_TOWER: ITEM_TOWER}
    for served, offline in ((fp32.vector, vector), (fp32.image, offline_image), (fp32.text, offline_text)):
        np.testing.assert_allclose(served, offline, atol=1e-4, rtol=1e-4)

    int8_files = {IMAGE_ENCODER: int8_variant(IMAGE_ENCODER), TEXT_ENCODER: int8_variant(TEXT_ENCODER),
                  ITEM_TOWER: ITEM_TOWER}
    for precision in ("int8", "auto"):  # auto on a CPU: the int8 encoders the bundle has
        int8 = _serve(bundle, tmp_path / precision, precision, item, image)
        assert int8.graph_files == int8_files
        for served, offline in ((int8.image, offline_image), (int8.text, offline_text)):
            assert served @ offline >= 0.99 and np.abs(served - offline).max() > 1e-6  # close, yet not fp32's
        # The item vector is not compared: FREEDOM's kNN step on an untrained CLIP's near-identical
        # features turns the encoders' small int8 error into other neighbours (cosine 0.95 here).
        assert np.isfinite(int8.vector).all() and int8.vector.shape == vector.shape

    with pytest.raises(BundleError, match="fp16 needs the CUDA provider"):
        _serve(bundle, tmp_path / "fp16", "fp16", item, image)
