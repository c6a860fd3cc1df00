"""cliper.bundle: atomic writing, checksums, format version, clear errors, the FAISS index."""

import json
import logging
import re
from pathlib import Path

import faiss
import numpy as np
import pytest

from cliper.bundle import (
    ITEM_VECTORS,
    BundleContent,
    BundleError,
    Seen,
    build_index,
    read_bundle,
    write_bundle,
)
from cliper.manifest import MANIFEST_FILE

K = 8


def fields(**overrides: object) -> dict:
    base = {
        "backbone": "vbpr",
        "fusion": {"mode": "attention", "tau": 0.1},
        "dims": {"image": 4, "text": 4, "item": K},
        "clip": {"model": "ViT-B-32", "pretrained": "openai"},
        "views": {"views": [{"name": "title", "columns": ["title"], "template": "The title is {}."}]},
        "preprocess": {"image_size": 32},
        "tokenizer": {"context_length": 16},
        "supports_cold_items": True,
    }
    return {**base, **overrides}


def content(n_users: int = 5, n_items: int = 30, seed: int = 0) -> BundleContent:
    rng = np.random.default_rng(seed)
    pairs = np.array([[u, (u * 3 + j) % n_items] for u in range(n_users) for j in range(2)])
    return BundleContent(
        image_encoder=b"image-graph", text_encoder=b"text-graph", item_tower=b"tower-graph",
        tokenizer=b'{"model": {}}',
        user_ids=[f"u{i}" for i in range(n_users)], user_vectors=rng.normal(size=(n_users, K)),
        item_ids=[f"i{i}" for i in range(n_items)], item_vectors=rng.normal(size=(n_items, K)),
        seen=Seen.from_pairs(pairs, n_users), popularity=np.arange(n_items),
        item_fields=[{"title": f"item {i}"} for i in range(n_items)], clip_image=rng.normal(size=(n_items, 4)),
        clip_text=rng.normal(size=(n_items, 4)), view_weights=np.full((n_items, 1), 1.0),
    )


def test_round_trip(tmp_path: Path) -> None:
    data = content()
    manifest = write_bundle(tmp_path / "bundle", fields(), data)
    bundle = read_bundle(tmp_path / "bundle")
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{10}", manifest.bundle_version)
    assert bundle.manifest == manifest
    assert set(manifest.files) == {p.name for p in (tmp_path / "bundle").iterdir()} - {MANIFEST_FILE}
    np.testing.assert_array_equal(bundle.item_vectors, data.item_vectors.astype(np.float32))
    assert bundle.user_ids == list(data.user_ids) and bundle.item_ids == list(data.item_ids)
    assert bundle.seen.items_of(2).tolist() == [6, 7]
    assert bundle.index.ntotal == 30 and bundle.manifest.index.recall_at_50 is None
    queries = data.user_vectors.astype(np.float32)
    _, rows = bundle.index.search(queries, 1)
    assert rows[:, 0].tolist() == np.argmax(queries @ bundle.item_vectors.T, axis=1).tolist()
    assert (tmp_path / "bundle" / "image_encoder.onnx").read_bytes() == b"image-graph"


def test_replacing_a_bundle_leaves_no_temporary_folders(tmp_path: Path) -> None:
    first = write_bundle(tmp_path / "bundle", fields(), content(seed=0))
    second = write_bundle(tmp_path / "bundle", fields(backbone="lightgcn"), content(seed=1))
    assert second.bundle_version != first.bundle_version
    assert read_bundle(tmp_path / "bundle").manifest.backbone == "lightgcn"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_a_changed_file_is_named(tmp_path: Path) -> None:
    write_bundle(tmp_path / "bundle", fields(), content())
    path = tmp_path / "bundle" / ITEM_VECTORS
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"item_vectors\.npy: sha256 .* does not match"):
        read_bundle(tmp_path / "bundle")
    assert read_bundle(tmp_path / "bundle", verify=False).item_vectors.shape == (30, K)


def test_missing_file_and_newer_format_are_clear(tmp_path: Path) -> None:
    write_bundle(tmp_path / "bundle", fields(), content())
    (tmp_path / "bundle" / "seen_indptr.npy").unlink()
    with pytest.raises(BundleError, match=r"seen_indptr\.npy: listed in the manifest but missing"):
        read_bundle(tmp_path / "bundle")
    manifest = json.loads((tmp_path / "bundle" / MANIFEST_FILE).read_text())
    manifest["format_version"] = 3
    (tmp_path / "bundle" / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format_version 3 is not supported"):
        read_bundle(tmp_path / "bundle")
    with pytest.raises(BundleError, match="bundle folder not found"):
        read_bundle(tmp_path / "nowhere")


def test_bad_content_writes_nothing(tmp_path: Path) -> None:
    bad = content()
    bad.user_vectors = bad.user_vectors[:, :3]
    with pytest.raises(BundleError, match=r"user_vectors: shape \(5, 3\), expected \(5, 8\)"):
        write_bundle(tmp_path / "bundle", fields(), bad)
    with pytest.raises(BundleError, match="filled in by write_bundle"):
        write_bundle(tmp_path / "bundle", {**fields(), "bundle_version": "mine"}, content())
    with pytest.raises(BundleError, match="invalid manifest"):
        write_bundle(tmp_path / "bundle", fields(dims={"image": 4}), content())
    duplicate = content()
    duplicate.item_ids = ["same"] * 30
    with pytest.raises(BundleError, match="item_ids: ids are not unique"):
        write_bundle(tmp_path / "bundle", fields(), duplicate)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a bundle; refusing"):
        write_bundle(tmp_path / "home", fields(), content())
    assert (tmp_path / "home" / "notes.txt").read_text() == "keep me"


def test_approximate_index_reports_recall(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    vectors = np.random.default_rng(0).normal(size=(2000, K)).astype(np.float32)
    exact, recall = build_index(vectors, "Flat")
    assert recall is None and isinstance(exact, faiss.IndexIDMap2)
    with caplog.at_level(logging.INFO, logger="cliper.bundle"):
        _, low = build_index(vectors, "IVF32,Flat", "nprobe=1")
        _, high = build_index(vectors, "IVF32,Flat", "nprobe=32")
    assert 0 < low < high and high == pytest.approx(1.0)
    assert "recall@50 vs exact search" in caplog.text
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'IVF32,Flat' (nprobe=1) finds only" in warnings[0]  # the low one, not the high
    manifest = write_bundle(tmp_path / "b", fields(index={"factory": "HNSW8", "search_params": "efSearch=64"}),
                            content(n_items=300))
    assert 0.5 < manifest.index.recall_at_50 <= 1.0
    assert faiss.downcast_index(read_bundle(tmp_path / "b").index).hnsw.efSearch == 64  # the map dropped on reading


def test_seen_from_pairs_deduplicates_and_checks_range() -> None:
    seen = Seen.from_pairs(np.array([[1, 4], [0, 2], [1, 4], [1, 3]]), n_users=3)
    assert seen.indptr.tolist() == [0, 1, 3, 3]
    assert seen.items_of(1).tolist() == [3, 4] and seen.items_of(2).tolist() == []
    with pytest.raises(BundleError, match="out of range"):
        Seen.from_pairs(np.array([[5, 0]]), n_users=2)


def test_item_catalog_round_trips_with_thumbnails_and_a_clip_index(tmp_path: Path) -> None:
    """Fields, unit CLIP embeddings, view weights and thumbnails come back per item row, and the
    CLIP index ranks by the mean of the image and text cosines."""
    data = content()
    jpegs = [None if i % 7 == 0 else bytes([i]) * (i + 1) for i in range(30)]
    data.thumbnails = jpegs
    write_bundle(tmp_path / "bundle", fields(), data)
    bundle = read_bundle(tmp_path / "bundle")
    assert bundle.item_fields[3] == {"title": "item 3"}
    image = data.clip_image / np.linalg.norm(data.clip_image, axis=1, keepdims=True)
    text = data.clip_text / np.linalg.norm(data.clip_text, axis=1, keepdims=True)
    np.testing.assert_allclose(bundle.clip_image, image, rtol=1e-6)
    np.testing.assert_allclose(bundle.clip_text, text, rtol=1e-6)
    assert [bundle.thumbnails.get(row) for row in range(30)] == jpegs
    query = image[5]
    scores, rows = bundle.clip_index.search(query[None].astype(np.float32), 3)
    expected = (image @ query + text @ query) / 2
    assert rows[0].tolist() == np.argsort(-expected)[:3].tolist()
    np.testing.assert_allclose(scores[0], np.sort(expected)[::-1][:3], rtol=1e-5)


def test_a_bundle_without_thumbnails_reads_none(tmp_path: Path) -> None:
    write_bundle(tmp_path / "bundle", fields(), content())
    bundle = read_bundle(tmp_path / "bundle")
    assert bundle.thumbnails is None and "thumbnails.bin" not in bundle.manifest.files


def test_item_fields_of_other_columns_are_refused(tmp_path: Path) -> None:
    data = content()
    data.item_fields = [{"colour": "red"}] * 30
    with pytest.raises(BundleError, match=r"item_fields\[0\]: expected str values of the views' columns"):
        write_bundle(tmp_path / "bundle", fields(), data)
