"""offline export: ONNX graphs equal torch, the bundle holds what the manifest says (every item's
fields, CLIP embeddings, view weights and thumbnail too), the index is exact."""

import io
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cliper.bundle import IMAGE_ENCODER, ITEM_TOWER, TEXT_ENCODER, fp16_variant, int8_variant, read_bundle
from cliper.thumbnails import THUMBNAILS
from cliper.tokenizer import TextTokenizer, trim_padding
from offline.cli import app
from offline.clip.model import ClipSpec, load_clip
from offline.config import ConfigError
from offline.export.bundle import SOURCE_FILE, ExportConfig, export_bundle, flatten_metrics, load_run
from offline.export.onnx_export import (
    IMAGE_GRAPH,
    TOWER_GRAPH,
    ItemTower,
    convert_to_fp16,
    cpu_session,
    export_clip_encoders,
    export_item_tower,
    quantize_to_int8,
)
from offline.models import ContentFeatures, InteractionGraph, ModelSpec, build_model
from offline.train.run import RunConfig, train_run

TOLERANCE = 1e-4
PROMPTS = ["The product title is Red striped mug.", "The product brand is Missing.", "", "long words " * 60]


@pytest.fixture(scope="module")
def bundle(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "bundle"
    export_bundle(tiny_run, out, ExportConfig(fp16=True))
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


def _io_types(graph: onnx.GraphProto) -> list[int]:
    return [value.type.tensor_type.elem_type for value in (*graph.input, *graph.output)]


def test_int8_encoders_keep_float32_inputs_and_outputs_and_stay_close(tmp_path: Path) -> None:
    clip = load_clip(ClipSpec(model="cliper-tiny"))
    export_clip_encoders(clip, tmp_path / IMAGE_ENCODER, tmp_path / TEXT_ENCODER)
    pixels = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)
    ids = clip.tokenize(PROMPTS)
    cases = {IMAGE_ENCODER: ({"pixel_values": pixels}, clip.encode_images(pixels)),
             TEXT_ENCODER: ({"input_ids": ids.numpy()}, clip.encode_tokens(ids))}
    for graph, (feeds, expected) in cases.items():
        int8 = quantize_to_int8(tmp_path / graph, tmp_path / int8_variant(graph))
        model = onnx.load(str(int8)).graph
        assert _io_types(model) == _io_types(onnx.load(str(tmp_path / graph)).graph)
        assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {node.op_type for node in model.node}
        assert any(init.data_type == onnx.TensorProto.INT8 for init in model.initializer)
        got = cpu_session(int8).run(None, feeds)[0]
        cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
        assert got.dtype == np.float32 and cosine.min() >= 0.99 and np.abs(got - expected).max() > 1e-6


def _tiny_model(backbone: str, content_mode: str = "attention", tau: float = 0.2):
    """A model on 30 items of random 16-wide features with the views title, brand, global."""
    generator = torch.Generator().manual_seed(0)
    graph = InteractionGraph(20, 30, np.stack([np.arange(40) % 20, np.arange(40) % 25], axis=1), np.arange(25, 30))
    image, views = torch.randn(30, 16, generator=generator), torch.randn(30, 3, 16, generator=generator)
    content = ContentFeatures(image, views, ("title", "brand", "global"))
    return build_model(ModelSpec(name=backbone, content_mode=content_mode, tau=tau), graph, content).eval()


def _softmax_weights(image: np.ndarray, views: np.ndarray, tau: float) -> np.ndarray:
    """CLIPER's attention weights in numpy: softmax over views of cos(view, image) / tau."""
    image = image / np.linalg.norm(image, axis=-1, keepdims=True)
    views = views / np.linalg.norm(views, axis=-1, keepdims=True)
    logits = np.einsum("bvd,bd->bv", views, image) / tau
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("backbone", ["freedom", "vbpr"])
def test_item_tower_matches_content_vectors(backbone: str, tmp_path: Path) -> None:
    model = _tiny_model(backbone)
    session = cpu_session(export_item_tower(model, tmp_path / ITEM_TOWER))
    assert [output.name for output in session.get_outputs()] == ["item_vectors", "view_weights"]
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 7):
        image, views = torch.randn(batch, 16, generator=generator), torch.randn(batch, 3, 16, generator=generator)
        with torch.no_grad():
            expected = model.content_item_vectors(image, views).numpy()
        vectors, weights = session.run(None, {"image_features": image.numpy(), "text_view_features": views.numpy()})
        assert np.abs(vectors - expected).max() <= TOLERANCE
        assert np.abs(weights - _softmax_weights(image.numpy(), views.numpy(), 0.2)).max() <= 1e-5


@pytest.mark.parametrize(("mode", "row"), [
    ("mean", [1 / 3] * 3), ("concat", [1 / 3] * 3), ("mlp", [1 / 3] * 3), ("image", [1 / 3] * 3),
    ("sum", [1.0, 1.0, 1.0]), ("global", [0.0, 0.0, 1.0]),
])
def test_item_tower_view_weights_of_fixed_fusions(mode: str, row: list[float], tmp_path: Path) -> None:
    """A fusion without attention weighs every item's views alike: uniform, ones, or the global view."""
    session = cpu_session(export_item_tower(_tiny_model("vbpr", mode), tmp_path / ITEM_TOWER))
    generator = torch.Generator().manual_seed(2)
    image, views = torch.randn(5, 16, generator=generator), torch.randn(5, 3, 16, generator=generator)
    _, weights = session.run(None, {"image_features": image.numpy(), "text_view_features": views.numpy()})
    np.testing.assert_allclose(weights, np.tile(row, (5, 1)), atol=1e-6)


def test_fp16_item_tower_keeps_both_float32_outputs(tmp_path: Path) -> None:
    model = _tiny_model("freedom")
    half = convert_to_fp16(export_item_tower(model, tmp_path / ITEM_TOWER), tmp_path / fp16_variant(ITEM_TOWER))
    graph = onnx.load(str(half)).graph
    assert tuple(output.name for output in graph.output) == TOWER_GRAPH.outputs
    assert {i.type.tensor_type.elem_type for i in (*graph.input, *graph.output)} == {onnx.TensorProto.FLOAT}
    image, views = torch.randn(4, 16), torch.randn(4, 3, 16)
    with torch.no_grad():
        expected = (model.content_item_vectors(image, views).numpy(), model.content_view_weights(image, views).numpy())
    got = cpu_session(half).run(None, {"image_features": image.numpy(), "text_view_features": views.numpy()})
    for out, want in zip(got, expected, strict=True):
        assert out.dtype == np.float32 and np.abs(out - want).max() <= 0.01 * np.abs(want).max()


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


def _readable(path: Path) -> np.ndarray | None:
    """The image's RGB pixels, or None when it is missing or cannot be decoded."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.float32)
    except OSError:
        return None


def test_every_item_has_its_fields_clip_embeddings_view_weights_and_thumbnail(bundle: Path, tiny_run: Path) -> None:
    loaded, run = read_bundle(bundle), load_run(tiny_run)
    data = Path(run.config.data)
    items = pd.read_csv(data / "items.csv", dtype=str, keep_default_na=False).set_index("item_id").loc[loaded.item_ids]
    columns = loaded.manifest.views.columns
    assert loaded.item_fields == [{c: row[c] for c in columns if row[c].strip()} for _, row in items.iterrows()]
    assert any(len(fields) < len(columns) for fields in loaded.item_fields)  # blank fields are left out
    # CLIP embeddings and view weights, recomputed in numpy from the run's features (attention, tau 0.2)
    image, views = run.content.image.numpy(), run.content.text_views.numpy()
    weights = _softmax_weights(image, views, loaded.manifest.fusion.tau)
    np.testing.assert_allclose(loaded.view_weights, weights, atol=1e-5)
    np.testing.assert_allclose(loaded.clip_image, image / np.linalg.norm(image, axis=1, keepdims=True), atol=1e-5)
    fused = np.einsum("bv,bvd->bd", weights, views)
    np.testing.assert_allclose(loaded.clip_text, fused / np.linalg.norm(fused, axis=1, keepdims=True), atol=1e-5)
    assert loaded.clip_index.ntotal == len(loaded.item_ids) and loaded.manifest.clip_index.factory == "Flat"
    # a JPEG of each readable image (32 px: not enlarged), none for the synthetic world's broken ones
    missing = 0
    for row, path in enumerate(items["image_path"]):
        original, jpeg = _readable(data / path), loaded.thumbnails.get(row)
        if original is None:
            missing += 1
            assert jpeg is None, loaded.item_ids[row]
            continue
        with Image.open(io.BytesIO(jpeg)) as thumbnail:
            assert thumbnail.format == "JPEG"
            pixels = np.asarray(thumbnail.convert("RGB"), dtype=np.float32)
        assert pixels.shape == original.shape and np.abs(pixels - original).mean() < 12, loaded.item_ids[row]
    assert 0 < missing < len(items)


def test_index_returns_brute_force_ids_and_scores(bundle: Path) -> None:
    loaded = read_bundle(bundle)
    k = 20
    scores, ids = loaded.index.search(loaded.user_vectors, k)
    brute = loaded.user_vectors @ loaded.item_vectors.T
    expected_ids = np.argsort(-brute, axis=1, kind="stable")[:, :k]
    assert np.allclose(scores, np.take_along_axis(brute, expected_ids, axis=1), atol=1e-5)
    assert np.allclose(np.take_along_axis(brute, ids, axis=1), scores, atol=1e-5)
    assert (ids == expected_ids).mean() > 0.99  # only exact ties may swap places


def test_export_command_with_approximate_indexes_and_no_thumbnails(tiny_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["export", "--run", str(tiny_run), "--out", str(tmp_path / "b"), "--no-thumbnails",
         "--index-factory", "HNSW32", "--search-params", "efSearch=128",
         "--clip-index-factory", "HNSW16", "--clip-search-params", "efSearch=64"],
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"index HNSW32, recall@50 vs exact \d\.\d{4}", result.output)
    assert re.search(r"CLIP index HNSW16, recall@50 vs exact \d\.\d{4}, no thumbnails", result.output)
    bundle = read_bundle(tmp_path / "b")
    manifest = bundle.manifest
    assert manifest.index.factory == "HNSW32" and manifest.index.recall_at_50 > 0.95
    assert manifest.clip_index.factory == "HNSW16" and manifest.clip_index.search_params == "efSearch=64"
    assert not any(name.endswith((".fp16.onnx", ".int8.onnx")) for name in manifest.files)  # a bundle for CPU
    assert bundle.thumbnails is None and THUMBNAILS not in manifest.files and not (tmp_path / "b" / THUMBNAILS).exists()
    assert len(bundle.item_fields) == len(bundle.view_weights) == len(bundle.clip_text) == len(bundle.item_ids)


def test_wrong_clip_is_refused(tiny_run: Path) -> None:
    with pytest.raises(ConfigError, match="not the one the features"):
        load_run(tiny_run).load_clip(ClipSpec(model="cliper-minilm"))


def test_flatten_metrics() -> None:
    metrics = {"model": "freedom", "best_epoch": 3, "test": {"recall@20": 0.5}, "cold": None,
               "popularity": {"valid": {"ndcg@10": 0.25}}, "split": "text"}
    assert flatten_metrics(metrics) == {"best_epoch": 3.0, "test/recall@20": 0.5, "popularity/valid/ndcg@10": 0.25}
