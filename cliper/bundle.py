"""Write and read the model bundle: the folder that is the only contract between offline and service.

`write_bundle` builds the folder beside its target, hashes every file into `manifest.json` and
swaps it into place, so a reader never sees half a bundle. `read_bundle` checks the format
version and the checksums and says which file is wrong. The FAISS index is built here too
(`build_index`), so its factory string and measured recall land in the manifest.

`read_bundle` memory-maps the big read-only parts instead of copying them into the process: the
arrays (`np.load(mmap_mode="r")`), both FAISS indexes (`faiss.IO_FLAG_MMAP_IFC`: the vectors of
Flat and HNSW indexes, HNSW's neighbour lists and IVF's inverted lists stay in the file), the ids
(`cliper.ids`) and the item fields (`cliper.item_fields`). The worker processes of a host then
share one copy through the page cache, a start-up reads only what it checks, and nothing is
built per user or per item. A bundle's files are never changed in place (`write_bundle` swaps a
whole new folder in), which is what makes mapping them safe; whatever the reader gets is
read-only (numpy refuses writes, and FAISS aborts the process on a change to a mapped index:
`service.index` never changes the bundle's).
"""

import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from pydantic import ValidationError

from cliper.encoding import search_vectors, unit
from cliper.ids import IdError, IdMap, order_path, write_ids
from cliper.item_fields import ItemFieldRows, ItemFieldsError, write_item_fields
from cliper.manifest import FORMAT_VERSION, GENERATED_FIELDS, MANIFEST_FILE, IndexSpec, Manifest
from cliper.thumbnails import THUMBNAIL_OFFSETS, THUMBNAILS, Thumbnails, write_thumbnails

IMAGE_ENCODER = "image_encoder.onnx"
TEXT_ENCODER = "text_encoder.onnx"
ITEM_TOWER = "item_tower.onnx"
USER_VECTORS = "user_vectors.npy"
USER_IDS = "user_ids.npy"
ITEM_VECTORS = "item_vectors.npy"
ITEM_IDS = "item_ids.npy"
SEEN_INDPTR = "seen_indptr.npy"
SEEN_INDICES = "seen_indices.npy"
POPULARITY = "popularity.npy"
INDEX = "index.faiss"
ITEM_FIELDS = "item_fields.json"
CLIP_IMAGE = "clip_image.npy"
CLIP_TEXT = "clip_text.npy"
VIEW_WEIGHTS = "view_weights.npy"
CLIP_INDEX = "clip_index.faiss"
_REQUIRED_FILES = {IMAGE_ENCODER, TEXT_ENCODER, ITEM_TOWER, USER_VECTORS, USER_IDS, order_path(Path(USER_IDS)).name,
                   ITEM_VECTORS, ITEM_IDS, order_path(Path(ITEM_IDS)).name, SEEN_INDPTR, SEEN_INDICES, POPULARITY,
                   INDEX, ITEM_FIELDS, CLIP_IMAGE, CLIP_TEXT, VIEW_WEIGHTS, CLIP_INDEX}
_DATA_FILES = _REQUIRED_FILES | {THUMBNAILS, THUMBNAIL_OFFSETS}
RECALL_K = 50
RECALL_QUERIES = 1000
LOW_RECALL = 0.9  # an approximate index below this recall@50 is logged as a warning, with what to raise
ADD_ROWS = 100_000  # vectors added to an index at a time; a larger index logs its progress

log = logging.getLogger(__name__)


def fp16_variant(graph: str) -> str:
    """The optional fp16 twin of a graph file (same float32 inputs and outputs), for GPU serving:
    `image_encoder.onnx` -> `image_encoder.fp16.onnx`."""
    return graph.removesuffix(".onnx") + ".fp16.onnx"


def int8_variant(graph: str) -> str:
    """The optional int8 twin of an encoder file (same float32 inputs and outputs), for CPU serving:
    `image_encoder.onnx` -> `image_encoder.int8.onnx`."""
    return graph.removesuffix(".onnx") + ".int8.onnx"


class BundleError(ValueError):
    """A bundle (or bundle content) that cannot be used; the message names the file to fix."""


@dataclass(frozen=True)
class Seen:
    """Each user's training items as CSR: user `u`'s item rows are `indices[indptr[u]:indptr[u+1]]`
    (int64 `indptr`; `indices` int32 in a bundle of fewer than 2^31 items, else int64)."""

    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_pairs(cls, pairs: np.ndarray, n_users: int) -> "Seen":
        """From `(n, 2)` `[user, item]` rows (e.g. `SplitData.train`); duplicates are kept once."""
        pairs = np.unique(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=0)
        counts = np.bincount(pairs[:, 0], minlength=n_users) if len(pairs) else np.zeros(n_users, np.int64)
        if len(counts) > n_users:
            raise BundleError(f"seen: user row {len(counts) - 1} is out of range for {n_users} users")
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(indptr, pairs[:, 1].copy())

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def items_of(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user] : self.indptr[user + 1]]


@dataclass
class BundleContent:
    """Everything `write_bundle` puts in a bundle besides the manifest and the index.

    ONNX graphs and the tokenizer are given as a file path or bytes. `item_vectors` rows follow
    `item_ids` (warm and cold items), `user_vectors` rows follow `user_ids`; `seen` holds item
    rows per user row; `popularity` one interaction count per item row. Per item row too: its
    text fields (`item_fields`, what filters match), its CLIP image and fused-text embeddings
    and its view weights (`cliper.encoding`; the embeddings are normalised on write and a
    second index, `clip_index.faiss`, is built over their mean for search), and optionally a
    JPEG thumbnail (`cliper.thumbnails`; `thumbnails=None` writes none).
    """

    image_encoder: Path | bytes
    text_encoder: Path | bytes
    item_tower: Path | bytes
    tokenizer: Path | bytes
    user_ids: Sequence[str]
    user_vectors: np.ndarray
    item_ids: Sequence[str]
    item_vectors: np.ndarray
    seen: Seen
    popularity: np.ndarray
    item_fields: Sequence[Mapping[str, str]]
    clip_image: np.ndarray
    clip_text: np.ndarray
    view_weights: np.ndarray
    thumbnails: Sequence[bytes | None] | None = None
    # Optional files under their own names (the fp16 graphs, the export's source.json),
    # hashed into the manifest like every other file.
    extra_files: Mapping[str, Path | bytes] = field(default_factory=dict)


@dataclass
class LoadedBundle:
    """A bundle read from disk: its manifest, arrays and FAISS indexes (ONNX files stay on disk),
    memory-mapped and read-only (module docstring). The indexes' own ids are the item rows: the
    `IndexIDMap2` the writer puts around each is dropped on reading when its ids are the row
    numbers, as `build_index` writes them (it holds an id array and a hash map of it: 50 MB per
    process at a million items)."""

    root: Path
    manifest: Manifest
    user_ids: IdMap
    user_vectors: np.ndarray
    item_ids: IdMap
    item_vectors: np.ndarray
    seen: Seen
    popularity: np.ndarray
    index: faiss.Index
    item_fields: ItemFieldRows
    clip_image: np.ndarray
    clip_text: np.ndarray
    view_weights: np.ndarray
    clip_index: faiss.Index
    thumbnails: Thumbnails | None

    def path(self, name: str) -> Path:
        """Absolute path of one bundle file, e.g. `path(IMAGE_ENCODER)`."""
        return self.root / name


def build_index(
    vectors: np.ndarray,
    factory: str = "Flat",
    search_params: str = "",
    queries: np.ndarray | None = None,
) -> tuple[faiss.Index, float | None]:
    """An inner-product `IndexIDMap2` over `vectors` (ids = row numbers) and its recall@50.

    `factory` is a FAISS index factory string for the inner index ("Flat", "IVF256,Flat",
    "HNSW32"); `search_params` a FAISS ParameterSpace string ("nprobe=16", "efSearch=128").
    Non-exact indexes are trained on `vectors`, and their recall@50 against exact search over
    `queries` (default: a sample of the vectors) is returned and logged; for "Flat" it is None.
    `read_bundle` drops the map again (its ids are the rows); the service never changes this
    index, it adds and removes items around it (`service/index.py`).
    """
    vectors = _float32_matrix(vectors, "item vectors")
    try:
        inner = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise BundleError(f"FAISS cannot build index factory {factory!r}: {exc}") from exc
    if not inner.is_trained:
        inner.train(vectors)
    _set_search_params(inner, search_params, "index")
    index = faiss.IndexIDMap2(inner)
    started = time.perf_counter()
    for start in range(0, len(vectors), ADD_ROWS):  # HNSW takes ~12 minutes for 10^6 x 64 on 2 cores
        stop = min(start + ADD_ROWS, len(vectors))
        index.add_with_ids(vectors[start:stop], np.arange(start, stop, dtype=np.int64))
        if len(vectors) > ADD_ROWS:
            log.info("index %r: %d of %d vectors added in %.0fs", factory, stop, len(vectors),
                     time.perf_counter() - started)
    if factory.strip() == "Flat":
        return index, None
    recall = index_recall(index, vectors, vectors if queries is None else queries)
    log.info("index %r (%s): recall@%d vs exact search = %.4f", factory, search_params, RECALL_K, recall)
    if recall < LOW_RECALL:
        log.warning("index %r (%s) finds only %.0f%% of the exact top %d: raise efSearch (HNSW) or nprobe (IVF) "
                    "in the search parameters, or use an IVF or Flat index for these vectors",
                    factory, search_params or "default parameters", 100 * recall, RECALL_K)
    return index, recall


def index_recall(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int = RECALL_K) -> float:
    """Mean fraction of the exact inner-product top-k that `index` returns (up to 1000 queries)."""
    queries = _float32_matrix(queries, "queries")
    if len(queries) > RECALL_QUERIES:
        queries = queries[np.random.default_rng(0).choice(len(queries), RECALL_QUERIES, replace=False)]
    k = min(k, len(vectors))
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(_float32_matrix(vectors, "item vectors"))
    _, truth = exact.search(queries, k)
    _, found = index.search(queries, k)
    hits = sum(len(np.intersect1d(t, f)) for t, f in zip(truth, found, strict=True))
    return hits / (len(queries) * k)


def write_bundle(out_dir: Path, manifest_fields: Mapping[str, Any], content: BundleContent) -> Manifest:
    """Write a complete bundle to `out_dir` atomically and return its manifest.

    `manifest_fields` holds every `Manifest` field except the generated ones
    (format_version, bundle_version, created_at, files); the index is built from
    `content.item_vectors` with `manifest_fields["index"]` (default: exact "Flat"), the CLIP
    index from the items' search vectors with `manifest_fields["clip_index"]`. The bundle
    is written to a temporary folder beside `out_dir`, every file is hashed, and the folder is
    renamed into place; an existing bundle at `out_dir` is replaced (it is moved aside first and
    deleted after the swap). Raises `BundleError` on inconsistent content.
    """
    out_dir = Path(out_dir).absolute()
    created = datetime.now(UTC).replace(microsecond=0)
    _check_fields(manifest_fields)
    manifest_draft = _validate({**manifest_fields, **_generated(created, "draft", {})}, "manifest fields")
    id_maps = {USER_IDS: _id_map(content.user_ids, "user_ids"), ITEM_IDS: _id_map(content.item_ids, "item_ids")}
    _check_content(content, manifest_draft)
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        index_specs = _write_files(tmp, content, manifest_draft, id_maps)
        files = {path.name: _sha256(path) for path in sorted(tmp.iterdir())}
        fields = {**manifest_fields, **index_specs}
        manifest = _validate({**fields, **_generated(created, _version(created, files), files)}, "manifest")
        _write_durably(tmp / MANIFEST_FILE, manifest.model_dump_json(indent=2).encode())
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote bundle %s (version %s)", out_dir, manifest.bundle_version)
    return manifest


def read_manifest(root: Path) -> Manifest:
    """The manifest of the bundle at `root`, with a clear error for a missing or newer format."""
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{path}: not found; is {root} a bundle folder written by `offline export`?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc}); the bundle is corrupt, re-export it") from exc
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {version!r} is not supported (this code reads "
            f"format_version {FORMAT_VERSION}); re-export the bundle or upgrade cliper"
        )
    return _validate(data, str(path))


def read_bundle(root: Path, verify: bool = True) -> LoadedBundle:
    """Read the bundle at `root`; with `verify`, check every file's sha256 against the manifest."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise BundleError(f"bundle folder not found: {root}")
    manifest = read_manifest(root)
    required = _REQUIRED_FILES | {manifest.tokenizer.file}
    unlisted = sorted(required - set(manifest.files))
    if unlisted:
        raise BundleError(f"{root / MANIFEST_FILE}: files {unlisted} are not listed; re-export the bundle")
    for name, expected in manifest.files.items():
        path = root / name
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing; re-export the bundle")
        if verify and (actual := _sha256(path)) != expected:
            raise BundleError(
                f"{path}: sha256 {actual[:12]}... does not match the manifest's {expected[:12]}...; "
                "the file is corrupt or was changed after export: re-export the bundle"
            )
    item_ids = _read_ids(root / ITEM_IDS)
    bundle = LoadedBundle(
        root=root,
        manifest=manifest,
        user_ids=_read_ids(root / USER_IDS),
        user_vectors=_read_npy(root / USER_VECTORS),
        item_ids=item_ids,
        item_vectors=_read_npy(root / ITEM_VECTORS),
        seen=_read_seen(root),
        popularity=_read_npy(root / POPULARITY),
        index=_read_index(root / INDEX, manifest.index.search_params),
        item_fields=_read_item_fields(root / ITEM_FIELDS, len(item_ids)),
        clip_image=_read_npy(root / CLIP_IMAGE),
        clip_text=_read_npy(root / CLIP_TEXT),
        view_weights=_read_npy(root / VIEW_WEIGHTS),
        clip_index=_read_index(root / CLIP_INDEX, manifest.clip_index.search_params),
        thumbnails=_read_thumbnails(root, manifest, len(item_ids)),
    )
    _check_loaded(bundle)
    _return_freed_memory()
    return bundle


def _generated(created: datetime, version: str, files: dict[str, str]) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "bundle_version": version, "created_at": created, "files": files}


def _check_fields(fields: Mapping[str, Any]) -> None:
    given = sorted(set(fields) & set(GENERATED_FIELDS))
    if given:
        raise BundleError(f"manifest fields {given} are filled in by write_bundle; leave them out")


def _validate(data: Mapping[str, Any], what: str) -> Manifest:
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise BundleError(f"{what}: invalid manifest:\n{exc}") from exc


def _float32_matrix(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise BundleError(f"{what}: expected a 2-D float array, got shape {array.shape} {array.dtype}")
    if not np.isfinite(array).all():
        raise BundleError(f"{what}: contains NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float32)


def _id_map(ids: Sequence[str], what: str) -> IdMap:
    """`ids` as they will be stored; `BundleError` for an empty, repeated or NUL-holding id."""
    try:
        return IdMap.of(ids)
    except IdError as exc:
        raise BundleError(f"{what}: {exc}") from exc


def _check_content(content: BundleContent, manifest: Manifest) -> None:
    k = manifest.dims.item
    users = _float32_matrix(content.user_vectors, "user_vectors")
    items = _float32_matrix(content.item_vectors, "item_vectors")
    for name, array, ids in (("user", users, content.user_ids), ("item", items, content.item_ids)):
        if array.shape != (len(ids), k):
            raise BundleError(
                f"{name}_vectors: shape {array.shape}, expected ({len(ids)}, {k}) from {name}_ids and dims.item"
            )
    _check_seen(content.seen, len(content.user_ids), len(content.item_ids), "seen")
    n_items = len(content.item_ids)
    if np.asarray(content.popularity).shape != (n_items,):
        raise BundleError(f"popularity: shape {np.shape(content.popularity)}, expected ({n_items},)")
    _check_item_catalog(content, manifest)


def _check_item_catalog(content: BundleContent, manifest: Manifest) -> None:
    """The per-item fields, CLIP embeddings, view weights and thumbnails fit the items."""
    n_items, dims = len(content.item_ids), manifest.dims
    if dims.image != dims.text:
        raise BundleError(f"dims: image {dims.image} and text {dims.text} differ; CLIP embeds both in one space")
    if len(content.item_fields) != n_items:
        raise BundleError(f"item_fields: {len(content.item_fields)} entries, expected one per item ({n_items})")
    columns = set(manifest.views.columns)
    for row, fields in enumerate(content.item_fields):
        if not all(isinstance(v, str) for v in fields.values()) or not set(fields) <= columns:
            raise BundleError(f"item_fields[{row}]: expected str values of the views' columns {sorted(columns)}, "
                              f"got {dict(fields)!r:.200}")
    n_views = len(manifest.views.view_names)
    for name, array, shape in (("clip_image", content.clip_image, (n_items, dims.image)),
                               ("clip_text", content.clip_text, (n_items, dims.text)),
                               ("view_weights", content.view_weights, (n_items, n_views))):
        if _float32_matrix(array, name).shape != shape:
            raise BundleError(f"{name}: shape {np.shape(array)}, expected {shape}")
    if content.thumbnails is not None and len(content.thumbnails) != n_items:
        raise BundleError(f"thumbnails: {len(content.thumbnails)} entries, expected one per item ({n_items})")


def _check_seen(seen: Seen, n_users: int, n_items: int, what: str) -> None:
    if seen.n_users != n_users or seen.indptr[0] != 0 or seen.indptr[-1] != len(seen.indices):
        raise BundleError(f"{what}: CSR indptr does not describe {n_users} users over {len(seen.indices)} entries")
    if np.any(np.diff(seen.indptr) < 0):
        raise BundleError(f"{what}: CSR indptr must not decrease")
    if len(seen.indices) and (seen.indices.min() < 0 or seen.indices.max() >= n_items):
        raise BundleError(f"{what}: item rows must lie in [0, {n_items})")


def _check_replaceable(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise BundleError(f"{out_dir} is a file; a bundle is a folder, pick another path")
    if out_dir.exists() and not (out_dir / MANIFEST_FILE).is_file() and any(out_dir.iterdir()):
        raise BundleError(f"{out_dir} exists and is not a bundle; refusing to replace it, pick another folder")


def _write_files(tmp: Path, content: BundleContent, manifest: Manifest, id_maps: Mapping[str, IdMap]) -> dict[str, Any]:
    """Write every data file into `tmp` (`id_maps`: the checked ids by file name); return the
    index specs with their measured recall."""
    graphs = ((IMAGE_ENCODER, content.image_encoder), (TEXT_ENCODER, content.text_encoder),
              (ITEM_TOWER, content.item_tower), (manifest.tokenizer.file, content.tokenizer))
    clashes = sorted(set(content.extra_files) & (_DATA_FILES | {MANIFEST_FILE, manifest.tokenizer.file}))
    if clashes:
        raise BundleError(f"extra files {clashes} would overwrite the bundle's own files; rename them")
    nested = sorted(name for name in content.extra_files if Path(name).name != name)
    if nested:
        raise BundleError(f"extra files {nested} must be plain file names (a bundle is one flat folder)")
    for name, source in (*graphs, *content.extra_files.items()):
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        _write_durably(tmp / name, data)
    items = _float32_matrix(content.item_vectors, "item_vectors")
    users = _float32_matrix(content.user_vectors, "user_vectors")
    _save(tmp / USER_VECTORS, lambda f: np.save(f, users))
    _save(tmp / ITEM_VECTORS, lambda f: np.save(f, items))
    for name, id_map in id_maps.items():
        id_map.save(tmp / name)
        fsync_path(tmp / name)
        fsync_path(order_path(tmp / name))
    seen = content.seen
    index_type = np.int32 if len(content.item_ids) < 2**31 else np.int64
    _save(tmp / SEEN_INDPTR, lambda f: np.save(f, np.asarray(seen.indptr, dtype=np.int64)))
    _save(tmp / SEEN_INDICES, lambda f: np.save(f, np.asarray(seen.indices, dtype=index_type)))
    _save(tmp / POPULARITY, lambda f: np.save(f, np.asarray(content.popularity, dtype=np.float32)))
    specs = {"index": _write_index(tmp / INDEX, items, manifest.index, users if len(users) else None)}
    clip_image, clip_text = unit(content.clip_image), unit(content.clip_text)
    _save(tmp / CLIP_IMAGE, lambda f: np.save(f, clip_image))
    _save(tmp / CLIP_TEXT, lambda f: np.save(f, clip_text))
    _save(tmp / VIEW_WEIGHTS, lambda f: np.save(f, _float32_matrix(content.view_weights, "view_weights")))
    # search queries are unit CLIP embeddings of text or images: the items' own embeddings stand in for them
    specs["clip_index"] = _write_index(tmp / CLIP_INDEX, search_vectors(clip_image, clip_text), manifest.clip_index,
                                       np.concatenate([clip_image, clip_text]))
    write_item_fields(tmp / ITEM_FIELDS, content.item_fields)
    fsync_path(tmp / ITEM_FIELDS)
    if content.thumbnails is not None:
        write_thumbnails(tmp, content.thumbnails)
        fsync_path(tmp / THUMBNAILS)
        fsync_path(tmp / THUMBNAIL_OFFSETS)
    return specs


def _write_index(path: Path, vectors: np.ndarray, spec: IndexSpec, queries: np.ndarray | None) -> dict[str, Any]:
    """Build and write one index; its spec with the measured recall."""
    index, recall = build_index(vectors, spec.factory, spec.search_params, queries)
    faiss.write_index(index, str(path))
    fsync_path(path)
    return {**spec.model_dump(), "recall_at_50": recall}


def _save(path: Path, write: Any) -> None:
    with path.open("wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def _write_durably(path: Path, data: bytes) -> None:
    _save(path, lambda handle: handle.write(data))


def fsync_path(path: Path) -> None:
    """Make a file's contents, or a folder's entries (new files, a rename), durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(created: datetime, files: dict[str, str]) -> str:
    listing = "".join(f"{name}:{sha}\n" for name, sha in sorted(files.items()))
    return f"{created:%Y%m%dT%H%M%SZ}-{hashlib.sha256(listing.encode()).hexdigest()[:10]}"


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename `tmp` to `out_dir`; an existing bundle is moved aside first and removed after.

    A directory cannot be renamed over a non-empty one, so for a moment `out_dir` is absent; a
    reader then gets "bundle folder not found", never a mix of two bundles.
    """
    fsync_path(tmp)
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except OSError:
        if old is not None:
            os.replace(old, out_dir)
        raise
    fsync_path(out_dir.parent)
    if old is not None:
        shutil.rmtree(old)


def _read_npy(path: Path) -> np.ndarray:
    """The array in `path`, memory-mapped and read-only (a plain ndarray view of numpy's memmap,
    whose subclass costs about a microsecond per scalar read)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)
    except (ValueError, OSError, EOFError) as exc:
        raise BundleError(f"{path}: not a readable .npy file ({exc})") from exc


def _read_ids(path: Path) -> IdMap:
    try:
        return IdMap.load(path)
    except IdError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    except (ValueError, OSError, EOFError) as exc:
        raise BundleError(f"{path} or {order_path(path).name}: not a readable .npy file ({exc})") from exc


def _read_seen(root: Path) -> Seen:
    indptr, indices = _read_npy(root / SEEN_INDPTR), _read_npy(root / SEEN_INDICES)
    for name, array in ((SEEN_INDPTR, indptr), (SEEN_INDICES, indices)):
        if array.ndim != 1 or array.dtype not in (np.int32, np.int64) or (name == SEEN_INDPTR and array.dtype != np.int64):
            raise BundleError(f"{root / name}: {array.dtype}{array.shape}, expected a 1-D "
                              f"{'int64' if name == SEEN_INDPTR else 'int32 or int64'} array")
    return Seen(indptr, indices)


def _read_index(path: Path, search_params: str) -> faiss.Index:
    """The index in `path`, memory-mapped where FAISS can, without its id map when the ids are the rows."""
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    except RuntimeError as exc:
        raise BundleError(f"{path}: FAISS cannot read it ({exc})") from exc
    if not isinstance(index, faiss.IndexIDMap2):
        raise BundleError(f"{path}: expected an IndexIDMap2 (ids = item rows), got {type(index).__name__}")
    _set_search_params(faiss.downcast_index(index.index), search_params, path)
    return _without_row_map(index)


def _return_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's `malloc_trim`; elsewhere nothing).
    The id maps dropped on reading leave their hash maps' memory free but kept in the heap: about
    40 MB per index at a million items, in every worker process."""
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:
        trim(0)


def _without_row_map(index: faiss.IndexIDMap2) -> faiss.Index:
    """The index inside `index` when `index`'s ids are the row numbers (so are the inner index's
    own); the map is freed with `index`. Else `index`."""
    ids = faiss.vector_to_array(index.id_map)
    if not np.array_equal(ids, np.arange(len(ids))):
        return index
    try:  # a copy that shares the mapped parts (FAISS's clones keep views as views): a few MB
        return faiss.clone_index(index.index)
    except RuntimeError:  # an index type FAISS cannot clone keeps its map
        return index


def _set_search_params(index: faiss.Index, search_params: str, where: object) -> None:
    if not search_params:
        return
    try:
        faiss.ParameterSpace().set_index_parameters(index, search_params)
    except RuntimeError as exc:
        raise BundleError(f"{where}: FAISS rejects search_params {search_params!r} ({exc})") from exc


def _check_loaded(bundle: LoadedBundle) -> None:
    k = bundle.manifest.dims.item
    root = bundle.root
    n_users, n_items = len(bundle.user_ids), len(bundle.item_ids)
    arrays = ((USER_VECTORS, bundle.user_vectors, n_users), (ITEM_VECTORS, bundle.item_vectors, n_items))
    for name, array, rows in arrays:
        if array.shape != (rows, k) or array.dtype != np.float32:
            raise BundleError(f"{root / name}: shape {array.shape} {array.dtype}, expected ({rows}, {k}) float32")
    if bundle.popularity.shape != (n_items,):
        raise BundleError(f"{root / POPULARITY}: shape {bundle.popularity.shape}, expected ({n_items},)")
    _check_seen(bundle.seen, n_users, n_items, f"{root / SEEN_INDPTR}, {SEEN_INDICES}")
    dims = bundle.manifest.dims
    n_views = len(bundle.manifest.views.view_names)
    arrays = ((CLIP_IMAGE, bundle.clip_image, (n_items, dims.image)),
              (CLIP_TEXT, bundle.clip_text, (n_items, dims.text)),
              (VIEW_WEIGHTS, bundle.view_weights, (n_items, n_views)))
    for name, array, shape in arrays:
        if array.shape != shape or array.dtype != np.float32:
            raise BundleError(f"{root / name}: shape {array.shape} {array.dtype}, expected {shape} float32")
    if len(bundle.item_fields) != n_items:
        raise BundleError(f"{root / ITEM_FIELDS}: {len(bundle.item_fields)} entries, expected {n_items}")
    for name, index, width in ((INDEX, bundle.index, k), (CLIP_INDEX, bundle.clip_index, dims.image)):
        if index.ntotal != n_items or index.d != width:
            raise BundleError(
                f"{root / name}: holds {index.ntotal} vectors of width {index.d}, expected {n_items} of width {width}"
            )
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise BundleError(f"{root / name}: the metric must be inner product")


def _read_item_fields(path: Path, n_items: int) -> ItemFieldRows:
    try:
        return ItemFieldRows.open(path, n_items)
    except (ItemFieldsError, OSError) as exc:
        raise BundleError(str(exc)) from exc


def _read_thumbnails(root: Path, manifest: Manifest, n_items: int) -> Thumbnails | None:
    """The bundle's thumbnails, or None for a bundle exported without (`--no-thumbnails`)."""
    if THUMBNAILS not in manifest.files:
        return None
    try:
        return Thumbnails(root, n_items)
    except (ValueError, OSError) as exc:
        raise BundleError(f"{root}: the thumbnails cannot be read ({exc}); re-export the bundle") from exc
