"""offline export: ONNX graphs equal torch, the bundle holds what the manifest says, the index is exact."""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from cliper.bundle import IMAGE_ENCODER, ITEM_TOWER, TEXT_ENCODER, fp16_variant, read_bundle
from cliper.tokenizer import TextTokenizer, trim_padding
from offline.cli import app
from offline.clip.model import ClipSpec, load_clip
from offline.config import ConfigError
from offline.export.bundle import SOURCE_FILE, ExportConfig, export_bundle, flatten_metrics, load_run
from offline.export.onnx_export import (
    IMAGE_GRAPH,
    ItemTower,
    convert_to_fp16,
    cpu_session,
    export_clip_encoders,
    export_item_tower,
)
from offline.models import ContentFeatures, InteractionGraph, ModelSpec, build_model
from offline.train.run import RunConfig, train_run

TOLERANCE = 1e-4
PROMPTS = ["The product title is Red striped mug.", "The product brand is Missing.", "", "long words " * 60]


@pytest.fixture(scope="module")
def bundle(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "bundle"
    export_bundle(tiny_run, out, ExportConfig())
    return out


def _run(session, **feeds: np.ndarray) -> np.ndarray:
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("model", ["cliper-tiny", "cliper-minilm"])
def test_clip_encoders_match_torch(model: str, tmp_path: Path) -> None:
    clip = load_clip(ClipSpec(model=model))
    export_clip_encoders(clip, tmp_path / IMAGE_ENCODER, tmp_path / TEXT_ENCODER)
    size = clip.preprocess_config.image_size
    image, text = cpu_session(tmp_path / IMAGE_ENCODER), cpu_session(tmp_path / TEXT_ENCODER)
    for batch in (1, 5):  # the batch axis is dynamic
        pixels = np.random.default_rng(batch).standard_normal((batch, 3, size, size), dtype=np.float32)
        assert np.abs(_run(image, pixel_values=pixels) - clip.encode_images(pixels)).max() <= TOLERANCE
    ids = clip.tokenize(PROMPTS)
    expected = clip.encode_tokens(ids)
    assert np.abs(_run(text, input_ids=ids.numpy()) - expected).max() <= TOLERANCE
    if clip.hf_text is not None:  # a masked HF tower: trimmed padding gives the same features
        trimmed = trim_padding(ids[:3].numpy(), clip.hf_text.config.pad_token_id)
        assert trimmed.shape[1] < ids.shape[1]
        assert np.abs(_run(text, input_ids=trimmed) - expected[:3]).max() <= TOLERANCE


def test_fp16_graph_keeps_float32_inputs_and_outputs(tmp_path: Path) -> None:
    clip = load_clip(ClipSpec(model="cliper-tiny"))
    export_clip_encoders(clip, tmp_path / IMAGE_ENCODER, tmp_path / TEXT_ENCODER)
    half = convert_to_fp16(tmp_path / IMAGE_ENCODER, tmp_path / fp16_variant(IMAGE_ENCODER))
    graph = onnx.load(str(half)).graph
    assert [i.type.tensor_type.elem_type for i in (*graph.input, *graph.output)] == [onnx.TensorProto.FLOAT] * 2
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)
    pixels = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)
    expected = clip.encode_images(pixels)
    got = _run(cpu_session(half), pixel_values=pixels)
    assert got.dtype == np.float32
    assert 0 < np.abs(got - expected).max() <= 0.01 * np.abs(expected).max()


@pytest.mark.parametrize("backbone", ["freedom", "vbpr"])
def test_item_tower_matches_content_vectors(backbone: str, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    graph = InteractionGraph(20, 30, np.stack([np.arange(40) % 20, np.arange(40) % 25], axis=1), np.arange(25, 30))
    image, views = torch.randn(30, 16, generator=generator), torch.randn(30, 3, 16, generator=generator)
    content = ContentFeatures(image, views, ("title", "brand", "global"))
    model = build_model(ModelSpec(name=backbone), graph, content).eval()
    session = cpu_session(export_item_tower(model, tmp_path / ITEM_TOWER))
    for batch in (1, 7):
        image, views = torch.randn(batch, 16, generator=generator), torch.randn(batch, 3, 16, generator=generator)
        with torch.no_grad():
            expected = model.content_item_vectors(image, views).numpy()
        got = _run(session, image_features=image.numpy(), text_view_features=views.numpy())
        assert np.abs(got - expected).max() <= TOLERANCE


def test_id_only_backbone_has_no_item_tower(synth_world: Path, tmp_path: Path) -> None:
    graph = InteractionGraph(4, 6, np.array([[0, 0], [1, 1], [2, 2], [3, 3]]), np.array([5]))
    with pytest.raises(ValueError, match="ID-only"):
        ItemTower(build_model(ModelSpec(name="bpr", content_mode="none"), graph))
    train_run(RunConfig(data=synth_world, model="bpr", epochs=1, out=tmp_path / "bpr"), progress=False)
    with pytest.raises(ConfigError, match="ID-only backbone 'bpr'"):
        load_run(tmp_path / "bpr")


def test_bundle_content_and_manifest(bundle: Path, tiny_run: Path) -> None:
    loaded = read_bundle(bundle)
    manifest, run = loaded.manifest, load_run(tiny_run)
    assert {fp16_variant(g) for g in (IMAGE_ENCODER, TEXT_ENCODER, ITEM_TOWER)} | {SOURCE_FILE} <= set(manifest.files)
    assert manifest.backbone == "freedom" and manifest.fusion.mode == "attention" and manifest.fusion.tau == 0.2
    assert (manifest.dims.image, manifest.dims.text) == (64, 64) and manifest.supports_cold_items
    assert manifest.views == run.views and manifest.clip == run.features_meta["clip"]
    assert manifest.tokenizer.context_length == run.features_meta["clip"]["context_length"]
    assert manifest.tokenizer.clean == "lower"  # CLIP's own BPE tokenizer
    assert manifest.chunking.max_chunks == run.features_meta["max_chunks"]
    assert manifest.metrics["test/recall@20"] == run.metrics["test"]["recall@20"]
    assert manifest.git_commit is None or re.fullmatch(r"[0-9a-f]{40}", manifest.git_commit)
    assert json.loads((bundle / SOURCE_FILE).read_text())["run"] == str(tiny_run.resolve())
    # vectors, ids, seen items and popularity are the run's
    with torch.no_grad():
        users, items = run.model.user_vectors().numpy(), run.model.item_vectors().numpy()
    assert np.array_equal(loaded.user_vectors, users) and np.array_equal(loaded.item_vectors, items)
    assert loaded.user_ids == run.split.user_ids and loaded.item_ids == run.split.item_ids
    first_user = run.split.train[run.split.train[:, 0] == 0, 1]
    assert sorted(loaded.seen.items_of(0)) == sorted(set(first_user))
    assert loaded.popularity.sum() == len(run.split.train)
    assert loaded.popularity[run.split.cold_items].sum() == 0
    # the bundle's tokenizer gives the CLIP's ids
    clip = run.load_clip()
    tokenizer = TextTokenizer.from_file(bundle / manifest.tokenizer.file, manifest.tokenizer)
    assert np.array_equal(tokenizer.encode_batch(PROMPTS).input_ids, clip.tokenize(PROMPTS).numpy())
    # the graphs have the names and dynamic batch axis the service expects
    image = cpu_session(bundle / IMAGE_ENCODER)
    assert [i.name for i in image.get_inputs()] == list(IMAGE_GRAPH.inputs)
    assert isinstance(image.get_inputs()[0].shape[0], str)


def test_index_returns_brute_force_ids_and_scores(bundle: Path) -> None:
    loaded = read_bundle(bundle)
    k = 20
    scores, ids = loaded.index.search(loaded.user_vectors, k)
    brute = loaded.user_vectors @ loaded.item_vectors.T
    expected_ids = np.argsort(-brute, axis=1, kind="stable")[:, :k]
    assert np.allclose(scores, np.take_along_axis(brute, expected_ids, axis=1), atol=1e-5)
    assert np.allclose(np.take_along_axis(brute, ids, axis=1), scores, atol=1e-5)
    assert (ids == expected_ids).mean() > 0.99  # only exact ties may swap places


def test_export_command_with_an_approximate_index(tiny_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["export", "--run", str(tiny_run), "--out", str(tmp_path / "b"), "--no-fp16",
         "--index-factory", "HNSW32", "--search-params", "efSearch=128"],
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"index HNSW32, recall@50 vs exact \d\.\d{4}", result.output)
    manifest = read_bundle(tmp_path / "b").manifest
    assert manifest.index.factory == "HNSW32" and manifest.index.recall_at_50 > 0.95
    assert not any(name.endswith(".fp16.onnx") for name in manifest.files)


def test_wrong_clip_is_refused(tiny_run: Path) -> None:
    with pytest.raises(ConfigError, match="not the one the features"):
        load_run(tiny_run).load_clip(ClipSpec(model="cliper-minilm"))


def test_flatten_metrics() -> None:
    metrics = {"model": "freedom", "best_epoch": 3, "test": {"recall@20": 0.5}, "cold": None,
               "popularity": {"valid": {"ndcg@10": 0.25}}, "split": "text"}
    assert flatten_metrics(metrics) == {"best_epoch": 3.0, "test/recall@20": 0.5, "popularity/valid/ndcg@10": 0.25}
