"""Start-up from a snapshot: only the log entries after it are applied, and the service answers
exactly as after a replay of the whole logs; snapshots of another bundle or store, unfinished or
corrupt ones are not used (both store backends; Flat, HNSW and IVF bundles)."""

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bundle_factory import FactoryBundle, build_bundle, prototype_item
from prometheus_client.parser import text_string_to_metric_families
from service_testing import item_body
from store_testing import Database

from cliper.bundle import build_index
from service.catalog import CatalogState
from service.index import ItemIndex
from service.snapshot import LogPosition, Snapshot, SnapshotDir, SnapshotKey
from service.users import Folded

pytestmark = pytest.mark.both_stores

USERS = ["user-000", "user-001", "user-002", "stranger", "nobody"]  # bundle users, a folded-in new one, an unknown
PHASE_TWO = {"items": 4, "interactions": 3}  # the log entries `phase_two` appends
ALL = {"items": 5 + 4, "interactions": 3 + 3}


@pytest.fixture(scope="module")
def hnsw(tmp_path_factory: pytest.TempPathFactory) -> FactoryBundle:
    # efSearch over every item: the graph search finds the exact neighbours, so answers compare exactly
    return build_bundle(tmp_path_factory.mktemp("hnsw") / "bundle", index_factory="HNSW32", search_params="efSearch=512")


@pytest.fixture(scope="module")
def ivf(tmp_path_factory: pytest.TempPathFactory) -> FactoryBundle:
    return build_bundle(tmp_path_factory.mktemp("ivf") / "bundle", index_factory="IVF4,Flat", search_params="nprobe=4")


@pytest.fixture(params=["Flat", "HNSW32", "IVF4,Flat"])
def bundle(request: pytest.FixtureRequest, factory: FactoryBundle) -> FactoryBundle:
    return {"Flat": lambda: factory, "HNSW32": lambda: request.getfixturevalue("hnsw"),
            "IVF4,Flat": lambda: request.getfixturevalue("ivf")}[request.param]()


def phase_one(client: Any, bundle: FactoryBundle) -> None:
    """5 item log entries (3 new items, a replaced and a withdrawn bundle item), 3 interactions."""
    for cluster, item_id in ((0, "new-mug"), (1, "new-violin"), (2, "new-racket")):
        assert client.post("/items", json=item_body(prototype_item(cluster, item_id))).status_code == 201
    replaced = bundle.items[1].item_id
    assert client.post("/items", params={"replace": True},
                       json=item_body(prototype_item(3, replaced))).status_code == 201
    assert client.delete(f"/items/{bundle.items[2].item_id}").status_code == 200
    assert client.post("/users/user-000/interactions", json={"item_ids": ["new-mug", replaced]}).status_code == 201
    assert client.post("/users/stranger/interactions", json={"item_ids": ["new-violin"]}).status_code == 201


def phase_two(client: Any, bundle: FactoryBundle) -> None:
    """`PHASE_TWO`: 2 new items, a withdrawn ingested one, a replaced one; 3 interactions."""
    for cluster, item_id in ((3, "new-fern"), (0, "new-kettle")):
        assert client.post("/items", json=item_body(prototype_item(cluster, item_id))).status_code == 201
    assert client.delete("/items/new-racket").status_code == 200
    assert client.post("/items", params={"replace": True},
                       json=item_body(prototype_item(2, "new-mug"))).status_code == 201
    assert client.post("/users/user-001/interactions", json={"item_ids": ["new-fern"]}).status_code == 201
    assert client.post("/users/stranger/interactions",
                       json={"item_ids": ["new-kettle", bundle.items[5].item_id]}).status_code == 201


def view(client: Any, bundle: FactoryBundle) -> dict:
    """What clients can see of the index and the users."""
    items = ["new-mug", "new-violin", "new-fern", "new-kettle", "new-racket", *(i.item_id for i in bundle.items[:8])]
    return {
        "recs": {user: client.get(f"/users/{user}/recommendations", params={"k": 30}).json() for user in USERS},
        "items": {item: client.get(f"/items/{item}", params={"include_vector": True}).json() for item in items},
        "size": metric(client, "cliper_index_items"),
    }


def metric(client: Any, name: str) -> dict[str, float]:
    """The samples of one metric family in /metrics, by their labels."""
    families = text_string_to_metric_families(client.get("/metrics").text)
    return {",".join(sample.labels.values()): sample.value for family in families if family.name == name
            for sample in family.samples if not sample.name.endswith("_created")}


def applied(client: Any) -> dict[str, float]:
    return metric(client, "cliper_log_entries_applied")


def snapshots(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    return sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_a_restart_applies_only_the_changes_after_the_snapshot(make_client, bundle: FactoryBundle,
                                                               tmp_path: Path) -> None:
    folder = tmp_path / "snapshots"
    with make_client(bundle=bundle.path, snapshot_dir=folder) as client:
        assert applied(client) == {"items": 0, "interactions": 0}
        phase_one(client, bundle)
    [written] = snapshots(folder)  # at the clean shutdown
    assert (manifest(written)["item_seq"], manifest(written)["interaction_seq"]) > (0, 0)
    with make_client(bundle=bundle.path, snapshot_dir=tmp_path / "elsewhere") as client:  # leaves `folder` as it is
        phase_two(client, bundle)
        before = view(client, bundle)
    with make_client(bundle=bundle.path, snapshot_dir=folder) as client:
        assert applied(client) == PHASE_TWO
        resumed = view(client, bundle)
    with make_client(bundle=bundle.path, snapshot_keep=0) as client:  # no snapshots: the whole logs
        assert applied(client) == ALL
        replayed = view(client, bundle)
    assert resumed == replayed == before
    assert resumed["size"] == {"": len(bundle.items) + 5 - 2}  # 5 new, 2 withdrawn
    assert "new-racket" not in {entry["item_id"] for entry in resumed["recs"]["stranger"]["items"]}


def test_a_snapshot_of_another_store_is_not_loaded(make_client, make_database: Callable[[], Database],
                                                   factory: FactoryBundle, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "snapshots"
    with make_client(snapshot_dir=folder) as client:
        phase_one(client, factory)
    assert snapshots(folder)
    other = make_database()  # a new (or wiped) database: its own identity, its logs start again at 1
    with caplog.at_level(logging.INFO, logger="service.snapshot"):
        with make_client(data_dir=other.data_dir, store_url=other.url, snapshot_dir=folder) as client:
            assert applied(client) == {"items": 0, "interactions": 0}
            assert client.get("/items/new-mug").status_code == 404
            assert metric(client, "cliper_index_items") == {"": len(factory.items)}
            assert client.get("/users/stranger/recommendations").json()["fallback"] is True
    assert "of another bundle, store or fold-in rule ignored" in caplog.text


def test_a_snapshot_of_another_bundle_is_not_loaded(make_client, factory: FactoryBundle, hnsw: FactoryBundle,
                                                    tmp_path: Path) -> None:
    folder = tmp_path / "snapshots"
    with make_client(snapshot_dir=folder) as client:
        phase_one(client, factory)
    [flat_snapshot] = snapshots(folder)
    with make_client(bundle=hnsw.path, snapshot_dir=folder) as client:
        # the whole item log (entries of the other model are passed over), and the 4 stored items
        # (3 new, 1 replacement) re-encoded at start-up by this bundle's model; every interaction
        assert applied(client) == {"items": 5 + 4, "interactions": 3}
        assert client.get("/items/new-mug").json()["source"] == "ingested"
    [hnsw_snapshot] = snapshots(folder)  # its own; the other bundle's dropped
    assert manifest(hnsw_snapshot)["bundle_version"] == hnsw.manifest.bundle_version != factory.manifest.bundle_version
    assert not flat_snapshot.exists()


def test_an_unfinished_or_corrupt_snapshot_is_passed_over(make_client, factory: FactoryBundle, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "snapshots"
    with make_client(snapshot_dir=folder) as client:
        phase_one(client, factory)
    with make_client(snapshot_dir=folder) as client:
        assert applied(client) == {"items": 0, "interactions": 0}
        phase_two(client, factory)
    older, newest = sorted(snapshots(folder), key=lambda path: manifest(path)["item_seq"])
    # a write that crashed before its rename (a whole copy, even), and a newest one with a torn file
    shutil.copytree(newest, folder / ".tmp-snapshot-crashed")
    vectors = newest / "vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[: vectors.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="service.snapshot"):
        with make_client(snapshot_dir=folder) as client:
            assert applied(client) == PHASE_TWO  # from the older snapshot
            resumed = view(client, factory)
    assert f"snapshot {newest} ignored: vectors.npy does not match its checksum" in caplog.text
    assert ".tmp-snapshot-crashed ignored: an unfinished write" in caplog.text
    assert not newest.exists() and not (folder / ".tmp-snapshot-crashed").exists()  # dropped by the next write
    with make_client(snapshot_keep=0) as client:
        replayed = view(client, factory)
    assert resumed == replayed


def test_with_every_snapshot_corrupt_the_logs_are_replayed(make_client, factory: FactoryBundle, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "snapshots"
    with make_client(snapshot_dir=folder) as client:
        phase_one(client, factory)
        phase_two(client, factory)
        before = view(client, factory)
    [written] = snapshots(folder)
    index = written / "index.faiss"
    index.write_bytes(b"\0" * index.stat().st_size)  # same size, other bytes
    with caplog.at_level(logging.WARNING, logger="service.snapshot"):
        with make_client(snapshot_dir=folder) as client:
            assert applied(client) == ALL
            assert view(client, factory) == before
    assert "index.faiss does not match its checksum" in caplog.text


@pytest.mark.parametrize("trigger", [{"snapshot_every_changes": 3}, {"snapshot_every_s": 1.0}])
def test_snapshots_are_written_while_serving(make_client, factory: FactoryBundle, tmp_path: Path,
                                             trigger: dict[str, Any]) -> None:
    """After `snapshot_every_changes` log entries, or `snapshot_every_s` with any, without a shutdown."""
    folder = tmp_path / "snapshots"
    settings = {"snapshot_every_changes": 1_000_000, "snapshot_every_s": 3600.0, **trigger}
    with make_client(snapshot_dir=folder, **settings) as client:
        for cluster, item_id in ((0, "new-mug"), (1, "new-violin")):
            client.post("/items", json=item_body(prototype_item(cluster, item_id)))
        time.sleep(2.5)
        assert not snapshots(folder) if "snapshot_every_changes" in trigger else snapshots(folder)
        assert client.post("/users/stranger/interactions", json={"item_ids": ["new-mug"]}).status_code == 201
        client.get("/users/stranger/recommendations")  # a request applies the logs
        deadline = time.monotonic() + 10
        while not any(manifest(path)["interaction_seq"] > 0 for path in snapshots(folder)):
            assert time.monotonic() < deadline, "no snapshot written while serving"
            time.sleep(0.1)


def test_fold_in_sums_with_gram_matrices_are_kept_for_their_rule_only(tmp_path: Path) -> None:
    """A rule that keeps Gram matrices (least_squares) gets them back bit for bit; a process with
    another rule does not load them."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 4)).astype(np.float32)
    index = ItemIndex(build_index(vectors, "Flat")[0], [f"i{i}" for i in range(20)], vectors)
    totals, grams = rng.normal(size=(2, 4)), rng.normal(size=(2, 4, 4))
    users = Folded({"u1": ["i1"], "u2": ["i2", "i3"]}, ["u1", "u2"], np.array([1, 2]), totals, grams)
    key = SnapshotKey("bundle-1", "store-1", "least_squares")
    folder = SnapshotDir(tmp_path, keep=2)
    clip_vectors = rng.normal(size=(20, 6)).astype(np.float32)
    clip = ItemIndex(build_index(clip_vectors, "Flat")[0], [f"i{i}" for i in range(20)], clip_vectors)
    weights = rng.dirichlet(np.ones(3), 20).astype(np.float32)
    index.put("i20", vectors[0])
    clip.put("i20", clip_vectors[0])
    catalog = CatalogState(index.state(), clip.state(), weights[:1], {20: {"title": "an ingested mug"}})
    folder.write(Snapshot(key, LogPosition(3, 4), catalog, users, {"i1": 1}))
    loaded = folder.load(key, lambda snapshot: snapshot)
    assert loaded is not None and loaded.position == LogPosition(3, 4)
    np.testing.assert_array_equal(loaded.catalog.clip.live_vectors, clip_vectors[:1])  # the added row's only
    assert loaded.catalog.clip.ids == ["i20"] and len(loaded.catalog.clip.live) == 21
    np.testing.assert_array_equal(loaded.catalog.view_weights, weights[:1])
    assert loaded.catalog.ingested_fields == {20: {"title": "an ingested mug"}}
    assert loaded.users.seen == users.seen and loaded.users.stats_users == ["u1", "u2"]
    np.testing.assert_array_equal(loaded.users.grams, grams)
    np.testing.assert_array_equal(loaded.users.totals, totals)
    assert folder.load(SnapshotKey("bundle-1", "store-1", "mean"), lambda snapshot: snapshot) is None
