"""Snapshots: a process's catalog and users as of a position in the store's logs, on its local disk.

A process's item catalog (`service.catalog`), users' fold-in state and popularity counts are a projection of the
store's two logs (`service.follower`). A snapshot keeps that projection together with the
sequence numbers it includes (the last item change and the last interaction applied), so a
restart, or a new worker on the same disk, loads the newest snapshot and applies only the log
entries after it instead of the whole history. Snapshots are files on the process's own disk,
whichever store (SQLite, PostgreSQL) keeps the logs.

One snapshot is a folder `SNAPSHOT_DIR/snapshot-<item seq>-<interaction seq>-<random>/`:

- `manifest.json`: the format, the key, the positions, the bundle's rows, whether each index still
  searches the bundle's, and every other file's size and sha256;
- `index.faiss` (the additions index, `faiss.serialize_index`), `ids.json`, `live.npy`,
  `vectors.npy`, `tombstones.npy`: the item index's `IndexState` (`service.index`), relative to
  the bundle: ids and vectors of the rows added after the bundle's only (the live ones' vectors),
  the live mask over all rows; `clip_index.faiss`, `clip_vectors.npy` and `clip_tombstones.npy`
  the CLIP index's (the same rows, ids and live mask); `view_weights.npy` and
  `ingested_fields.json` the view weights and text fields of the rows added after the bundle's;
- `seen.json`, `stats_users.json`, `stats_count.npy`, `stats_total.npy` (and `stats_gram.npy`
  for a rule with Gram matrices): the users' `Folded` state (`service.users`);
- `popularity.json`: interactions per item since the bundle.

It is written into a `.tmp-*` folder, every file synced, then renamed into place in one step,
so a crash mid-write leaves only a `.tmp-*` folder, which loads never look at (the next writer
removes it). A snapshot is used only under the running process's key: its bundle version (the
vectors of one model), its store's identity (the sequence numbers of one database's logs) and
its fold-in rule (the sums that rule keeps). Every file's checksum is verified before use; one
that fails (a torn or corrupt file) is logged and the next older snapshot is tried, and with
none left the process replays the logs from the start.

Writers hold an exclusive `flock` on `SNAPSHOT_DIR/.lock` (loads a shared one), and skip a
write when a snapshot of the key already covers their position, so the worker processes of
one host share one folder without writing the same snapshot twice. After a write the folder
keeps the newest `keep` snapshots of the writer's key and drops every other key's (an older
bundle's, a wiped store's): give processes that run different bundles different folders.
"""

import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from cliper.bundle import fsync_path
from cliper.foldin import fold_in_rule
from service.catalog import CatalogState
from service.index import IndexState
from service.users import Folded

log = logging.getLogger(__name__)

FORMAT = 3  # 3: relative to the bundle (its rows' ids, vectors and index are the bundle's)
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
LOCK = ".lock"
T = TypeVar("T")


class SnapshotError(ValueError):
    """A snapshot folder that cannot be used: unfinished, corrupt, or inconsistent."""


@dataclass(frozen=True)
class SnapshotKey:
    """What a snapshot must match to be loaded."""

    bundle_version: str
    store_identity: str
    fold_in_rule: str


@dataclass(frozen=True)
class LogPosition:
    """The sequence numbers of the last item change and the last interaction applied."""

    item_seq: int = 0
    interaction_seq: int = 0

    def covers(self, other: "LogPosition") -> bool:
        return self.item_seq >= other.item_seq and self.interaction_seq >= other.interaction_seq

    def entries_after(self, other: "LogPosition") -> int:
        """How many log entries (by sequence number) this position is past `other`."""
        return max(0, self.item_seq - other.item_seq) + max(0, self.interaction_seq - other.interaction_seq)


@dataclass
class Snapshot:
    key: SnapshotKey
    position: LogPosition
    catalog: CatalogState
    users: Folded
    popularity: dict[str, int]


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot folder as its manifest describes it (not yet verified)."""

    path: Path
    key: SnapshotKey
    position: LogPosition
    created_at: float
    manifest: dict[str, Any]


class SnapshotDir:
    """The snapshot folder of one process (or of the worker processes of one host)."""

    def __init__(self, path: Path, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.path = path
        self.keep = keep
        self._failed: set[Path] = set()  # snapshots that did not load: not the newest any more, pruned

    def newest(self, key: SnapshotKey) -> SnapshotInfo | None:
        """The newest snapshot of `key` by its manifest, or None."""
        found = self._of_key(self._scan()[0], key)
        return found[0] if found else None

    def load(self, key: SnapshotKey, restore: Callable[[Snapshot], T]) -> T | None:
        """`restore(snapshot)` of the newest snapshot of `key` that verifies and restores;
        snapshots that fail are logged and skipped. None when none is left."""
        if not self.path.is_dir():
            return None
        with self._locked(fcntl.LOCK_SH):
            infos, problems = self._scan()
            for path, problem in problems:
                log.warning("snapshot %s ignored: %s", path, problem)
            others = sum(info.key != key for info in infos)
            if others:
                log.info("%d snapshot(s) in %s of another bundle, store or fold-in rule ignored", others, self.path)
            for info in self._of_key(infos, key):
                try:
                    snapshot = _read(info)
                    return restore(snapshot)
                except Exception as exc:  # noqa: BLE001 - any failure: the next older one, or a replay
                    log.warning("snapshot %s ignored: %s", info.path, exc)
                    self._failed.add(info.path)
        return None

    def write(self, snapshot: Snapshot) -> Path | None:
        """Write `snapshot` atomically and prune the folder; None (nothing written) when a
        snapshot of its key already covers its position."""
        self.path.mkdir(parents=True, exist_ok=True)
        with self._locked(fcntl.LOCK_EX):
            newest = self.newest(snapshot.key)
            if newest is not None and newest.position.covers(snapshot.position):
                return None
            position = snapshot.position
            name = f"snapshot-{position.item_seq}-{position.interaction_seq}-{uuid.uuid4().hex[:8]}"
            temporary = self.path / f"{TMP_PREFIX}{name}"
            try:
                temporary.mkdir()
                _write_files(temporary, snapshot)
                fsync_path(temporary)
                final = self.path / name
                temporary.rename(final)
                fsync_path(self.path)
            except BaseException:
                shutil.rmtree(temporary, ignore_errors=True)
                raise
            self._prune(snapshot.key)
        return final

    def _prune(self, key: SnapshotKey) -> None:
        """Keep the newest `keep` snapshots of `key`; drop other keys', and unfinished writes
        (no writer is running: this one holds the lock)."""
        infos, _ = self._scan()
        drop = [info.path for info in infos if info.key != key or info.path in self._failed]
        drop += [info.path for info in self._of_key(infos, key)[self.keep:]]
        drop += [path for path in self.path.iterdir() if path.name.startswith(TMP_PREFIX)]
        for path in drop:
            doomed = path if path.name.startswith(TMP_PREFIX) else path.rename(self.path / f"{TMP_PREFIX}{path.name}")
            shutil.rmtree(doomed, ignore_errors=True)

    def _scan(self) -> tuple[list[SnapshotInfo], list[tuple[Path, str]]]:
        """The snapshot folders with a readable manifest, and what is wrong with the others."""
        infos: list[SnapshotInfo] = []
        problems: list[tuple[Path, str]] = []
        if not self.path.is_dir():
            return infos, problems
        for path in sorted(self.path.iterdir()):
            if path.name == LOCK:
                continue
            if path.name.startswith(TMP_PREFIX):
                problems.append((path, "an unfinished write (never renamed into place)"))
                continue
            try:
                infos.append(_info(path))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                problems.append((path, f"unreadable manifest ({exc})"))
        return infos, problems

    def _of_key(self, infos: list[SnapshotInfo], key: SnapshotKey) -> list[SnapshotInfo]:
        """The snapshots of `key` not known to fail, newest position first."""
        mine = [info for info in infos if info.key == key and info.path not in self._failed]
        return sorted(mine, key=lambda info: (info.position.item_seq, info.position.interaction_seq,
                                              info.created_at), reverse=True)

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        with (self.path / LOCK).open("a") as handle:
            fcntl.flock(handle, mode)
            yield


def _info(path: Path) -> SnapshotInfo:
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest["format"] != FORMAT:
        raise ValueError(f"format {manifest['format']}, this service reads {FORMAT}")
    key = SnapshotKey(manifest["bundle_version"], manifest["store_identity"], manifest["fold_in_rule"])
    position = LogPosition(int(manifest["item_seq"]), int(manifest["interaction_seq"]))
    return SnapshotInfo(path, key, position, float(manifest["created_at"]), manifest)


def _write_files(folder: Path, snapshot: Snapshot) -> None:
    catalog, users = snapshot.catalog, snapshot.users
    index, clip = catalog.items, catalog.clip
    dim = index.live_vectors.shape[1]
    contents = {
        "index.faiss": memoryview(index.additions),
        "ids.json": _json(index.ids),
        "live.npy": _npy(index.live),
        "vectors.npy": _npy(index.live_vectors),
        "tombstones.npy": _npy(index.tombstones),
        "clip_index.faiss": memoryview(clip.additions),
        "clip_vectors.npy": _npy(clip.live_vectors),
        "clip_tombstones.npy": _npy(clip.tombstones),
        "view_weights.npy": _npy(catalog.view_weights),
        "ingested_fields.json": _json({str(row): fields for row, fields in catalog.ingested_fields.items()}),
        "seen.json": _json(users.seen),
        "stats_users.json": _json(users.stats_users),
        "stats_count.npy": _npy(users.counts),
        "stats_total.npy": _npy(users.totals),
        "popularity.json": _json(snapshot.popularity),
    }
    if users.grams is not None:
        contents["stats_gram.npy"] = _npy(users.grams)
    files = {}
    for name, content in contents.items():
        with (folder / name).open("wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        files[name] = {"bytes": len(content) if isinstance(content, bytes) else content.nbytes,
                       "sha256": hashlib.sha256(content).hexdigest()}
    manifest = {
        "format": FORMAT, "bundle_version": snapshot.key.bundle_version,
        "store_identity": snapshot.key.store_identity, "fold_in_rule": snapshot.key.fold_in_rule,
        "item_seq": snapshot.position.item_seq, "interaction_seq": snapshot.position.interaction_seq,
        "created_at": time.time(), "dim": dim, "clip_dim": clip.live_vectors.shape[1], "rows": len(index.live),
        "bundle_rows": len(index.live) - len(index.ids), "live": int(index.live.sum()),
        "uses_base": index.uses_base, "clip_uses_base": clip.uses_base,
        "files": files,
    }
    with (folder / MANIFEST).open("w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def _read(info: SnapshotInfo) -> Snapshot:
    """The snapshot in `info.path`, every file checked against the manifest's checksums."""
    manifest = info.manifest
    expected = set(manifest["files"])
    blobs = {name: _checked(info.path / name, spec) for name, spec in manifest["files"].items()}
    rule = fold_in_rule(info.key.fold_in_rule)
    if rule.needs_gram != ("stats_gram.npy" in expected):
        raise SnapshotError(f"its fold-in sums do not suit rule {info.key.fold_in_rule!r}")
    ids = json.loads(blobs["ids.json"])
    bundle_rows = int(manifest["bundle_rows"])
    live = _array(blobs["live.npy"], np.bool_, (bundle_rows + len(ids),))
    dim = int(manifest["dim"])
    index = _index_state(blobs, "", bool(manifest["uses_base"]), ids, live, dim)
    clip = _index_state(blobs, "clip_", bool(manifest["clip_uses_base"]), ids, live, int(manifest["clip_dim"]))
    weights = _array(blobs["view_weights.npy"], np.float32, None)
    ingested = {int(row): fields for row, fields in json.loads(blobs["ingested_fields.json"]).items()}
    if len(weights) != len(ids):
        raise SnapshotError(f"it has view weights of {len(weights)} added rows, and {len(ids)} added rows")
    stats_users = json.loads(blobs["stats_users.json"])
    counts = _array(blobs["stats_count.npy"], np.int64, (len(stats_users),))
    totals = _array(blobs["stats_total.npy"], np.float64, (len(stats_users), dim))
    grams = (_array(blobs["stats_gram.npy"], np.float64, (len(stats_users), dim, dim))
             if rule.needs_gram else None)
    seen = json.loads(blobs["seen.json"])
    popularity = json.loads(blobs["popularity.json"])
    if not isinstance(seen, dict) or not isinstance(popularity, dict):
        raise SnapshotError("its users' seen items or its popularity counts are not objects")
    return Snapshot(info.key, info.position, CatalogState(index, clip, weights, ingested),
                    Folded(seen, stats_users, counts, totals, grams), popularity)


def _index_state(blobs: dict[str, bytes], prefix: str, uses_base: bool, ids: list[str], live: np.ndarray,
                 dim: int) -> IndexState:
    """One index's state from the files named `prefix` + index.faiss, vectors.npy, tombstones.npy."""
    added_live = int(live[len(live) - len(ids) :].sum())
    state = IndexState(uses_base, np.frombuffer(blobs[f"{prefix}index.faiss"], dtype=np.uint8), ids, live,
                       _array(blobs[f"{prefix}vectors.npy"], np.float32, (added_live, dim)),
                       _array(blobs[f"{prefix}tombstones.npy"], np.int64, None))
    tombstones = state.tombstones
    if len(tombstones) and (tombstones.min() < 0 or tombstones.max() >= len(live) or live[tombstones].any()):
        raise SnapshotError("its tombstones are not dead rows")
    return state


def _checked(path: Path, spec: dict[str, Any]) -> bytes:
    data = path.read_bytes()
    if len(data) != spec["bytes"] or hashlib.sha256(data).hexdigest() != spec["sha256"]:
        raise SnapshotError(f"{path.name} does not match its checksum (a torn or corrupt file)")
    return data


def _array(data: bytes, dtype: type, shape: tuple[int, ...] | None) -> np.ndarray:
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.dtype != dtype or (shape is not None and array.shape != shape):
        raise SnapshotError(f"an array is {array.dtype}{array.shape}, expected {np.dtype(dtype)}{shape}")
    return array


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
