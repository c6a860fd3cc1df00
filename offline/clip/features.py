"""features: every catalog item's V view prompts (global last) and its image through CLIP.

A view text longer than the CLIP context is cut into chunks that each keep the view's prompt
(`cliper.views.chunk_prompts`); the chunks' embeddings are pooled (sum, as in the CLIPER paper,
or mean). Images go through `cliper.images.preprocess`, the same function the service uses, and
bad images through the data layer's placeholder. The outputs (see docs/architecture.md) are
cached under a key of everything they depend on, so a re-run with the same inputs is free.
"""

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field
from tqdm import tqdm

from cliper.images import preprocess_batch
from cliper.views import chunk_prompts
from offline.clip.alignment import image_to_text_recall, planted_lies, view_attention, weight_summary
from offline.clip.model import ClipHandle, ClipSpec, read_clip_spec
from offline.config import ConfigError, StrictModel
from offline.data.catalog import Catalog, CatalogError
from offline.data.images import ImageLoader
from offline.data.split import SplitConfig, split_catalog

log = logging.getLogger(__name__)

FEATURES_DIR = "features"
MMREC_DIR = "mmrec"
TEXT_FILE = "text_views.npy"
IMAGE_FILE = "image.npy"
ITEMS_JSON = "items.json"
ALIGNMENT_JSON = "alignment.json"
FORMAT_VERSION = 1  # bump when the outputs change for the same inputs
ATTENTION_TAU = 0.2  # CLIPER's temperature, for the alignment report
CALIBRATED_TAU = 1.0  # the calibrated attention's temperature in the report


class FeaturesConfig(StrictModel):
    """Settings of the features stage."""

    clip: ClipSpec | None = None  # None: the run's own train-clip output, RUN/clip/clip.json
    pooling: Literal["sum", "mean"] = "sum"  # how the chunks of a long text are combined
    max_chunks: int = Field(8, ge=1)  # chunks per view text; the rest of a very long text is dropped
    batch_size: int = Field(64, ge=1)
    device: str = "auto"
    split: SplitConfig = SplitConfig(method="random")  # MMRec's protocol, for the `.inter` file


@dataclass
class Features:
    """CLIP features of a catalog: `text_views` (V, N, D), `image` (N, D), and `items.json`."""

    text_views: np.ndarray
    image: np.ndarray
    meta: dict[str, Any]

    @property
    def item_ids(self) -> list[str]:
        return self.meta["item_ids"]

    def align(self, item_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(image (n, D), text_views (V, n, D)) in the order of `item_ids` (e.g. a split's)."""
        position = pd.Index(self.item_ids).get_indexer(item_ids)
        if (position < 0).any():
            missing = [item for item, p in zip(item_ids, position) if p < 0][:5]
            raise ConfigError(f"{int((position < 0).sum())} items have no features, e.g. {missing}; re-run features")
        return self.image[position], self.text_views[:, position]

    def save(self, folder: Path) -> None:
        """The arrays first, `items.json` (which holds the cache key) last."""
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / TEXT_FILE, self.text_views.astype(np.float32, copy=False))
        np.save(folder / IMAGE_FILE, self.image.astype(np.float32, copy=False))
        (folder / ITEMS_JSON).write_text(json.dumps(self.meta, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> "Features":
        folder = Path(folder)
        for name in (TEXT_FILE, IMAGE_FILE, ITEMS_JSON):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} not found; run `python -m offline features`")
        meta = json.loads((folder / ITEMS_JSON).read_text(encoding="utf-8"))
        return cls(np.load(folder / TEXT_FILE), np.load(folder / IMAGE_FILE), meta)


def resolve_clip(value: str | None, pretrained: str | None, run: Path, configured: ClipSpec | None) -> ClipSpec:
    """`--clip`: a train-clip run (or its clip.json), else a model name; default: the config's
    CLIP, else the run's own `RUN/clip/`."""
    if value is None:
        if configured is not None:
            return configured
        if (Path(run) / "clip").is_dir():
            return read_clip_spec(Path(run) / "clip")
        raise ConfigError("no CLIP given: pass --clip (a train-clip run folder or a model name) or run train-clip first")
    path = Path(value)
    if path.is_dir() and not (path / "clip.json").is_file() and (path / "clip").is_dir():
        path = path / "clip"  # a run folder
    if path.is_dir() or path.suffix == ".json":
        return read_clip_spec(path)
    return ClipSpec(model=value, pretrained=pretrained)


def cache_key(catalog: Catalog, identity: dict[str, Any], cfg: FeaturesConfig) -> str:
    """sha256 of the items, the images' sizes and mtimes, views, CLIP identity and settings."""
    digest = hashlib.sha256()
    for frame in (catalog.items, catalog.interactions):
        digest.update(json.dumps(list(frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    for path in catalog.image_files():
        stat = path.stat() if path is not None and path.is_file() else None
        digest.update(f"{path}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}\n".encode())
    settings = {
        "format": FORMAT_VERSION,
        "views": catalog.views.model_dump(mode="json"),
        "clip": identity,
        "pooling": cfg.pooling,
        "max_chunks": cfg.max_chunks,
        "split": cfg.split.model_dump(mode="json"),
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def encode_views(catalog: Catalog, handle: ClipHandle, cfg: FeaturesConfig) -> tuple[np.ndarray, np.ndarray]:
    """(V, N, D) pooled view embeddings and the (N, V) number of chunks of each view text."""
    views = catalog.views.view_names
    chunks_of: list[list[list[str]]] = []  # [item][view] -> chunk prompts
    for row in tqdm(catalog.items.to_dict("records"), desc="view prompts", unit="item", leave=False):
        chunks_of.append([
            chunk_prompts(template, value, handle.count_tokens, handle.context_length, cfg.max_chunks)
            for template, value in catalog.views.view_texts(row)
        ])
    texts = sorted({text for item in chunks_of for chunks in item for text in chunks}, key=lambda t: (len(t), t))
    embedded = np.concatenate([
        handle.encode_texts(texts[start : start + cfg.batch_size])
        for start in tqdm(range(0, len(texts), cfg.batch_size), desc="encoding texts", unit="batch")
    ])
    row = {text: i for i, text in enumerate(texts)}
    out = np.empty((len(views), len(chunks_of), embedded.shape[1]), np.float32)
    for n, item in enumerate(chunks_of):
        for v, chunks in enumerate(item):
            vectors = embedded[[row[text] for text in chunks]]
            out[v, n] = vectors.sum(axis=0) if cfg.pooling == "sum" else vectors.mean(axis=0)
    return out, np.array([[len(chunks) for chunks in item] for item in chunks_of]).reshape(-1, len(views))


def encode_images(catalog: Catalog, handle: ClipHandle, batch_size: int) -> tuple[np.ndarray, ImageLoader]:
    """(N, D) image embeddings; the loader lists the bad images (embedded as its placeholder)."""
    loader = ImageLoader()
    ids, files = catalog.items["item_id"].tolist(), catalog.image_files()
    batches = []
    for start in tqdm(range(0, len(ids), batch_size), desc="encoding images", unit="batch"):
        stop = start + batch_size
        images = [loader.load(item, path) for item, path in zip(ids[start:stop], files[start:stop])]
        batches.append(handle.encode_images(preprocess_batch(images, handle.preprocess_config)))
    loader.warn_if_bad()
    return np.concatenate(batches), loader


def extract_features(catalog: Catalog, handle: ClipHandle, cfg: FeaturesConfig, key: str) -> Features:
    """Encode every item's views and image (no caching here: see `run_features`)."""
    text_views, chunks = encode_views(catalog, handle, cfg)
    image, loader = encode_images(catalog, handle, cfg.batch_size)
    meta = {
        "item_ids": catalog.items["item_id"].tolist(),
        "views": catalog.views.view_names,
        "templates": catalog.views.templates,
        "clip": handle.identity,
        "pooling": cfg.pooling,
        "max_chunks": cfg.max_chunks,
        "chunked_items": int((chunks > 1).any(axis=1).sum()),
        "chunked_by_view": dict(zip(catalog.views.view_names, (chunks > 1).sum(axis=0).tolist())),
        "bad_images": [{"item_id": item, "reason": reason} for item, reason in loader.bad_images],
        "cache_key": key,
    }
    return Features(text_views, image, meta)


def write_mmrec(folder: Path, catalog: Catalog, features: Features, split_cfg: SplitConfig) -> dict[str, Any]:
    """MMRec's inputs: features of the split's warm items in id order, and `<catalog>.inter`.

    MMRec counts items as the largest id in `.inter` + 1, so the feature rows are exactly the
    warm items (cold items are the split's last ids and never appear in `.inter`). A catalog
    whose interactions cannot be split (too few) gets no export, with a warning: its features
    are still useful.
    """
    try:
        split = split_catalog(catalog, split_cfg)
    except CatalogError as exc:
        log.warning("no MMRec export: %s", exc)
        return {"skipped": str(exc)}
    image, text_views = features.align(split.item_ids[: split.n_warm_items])
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "image_feat.npy", image)
    np.save(folder / "text_feat.npy", text_views)
    inter = folder / f"{catalog.root.name}.inter"
    split.to_mmrec_inter(inter)
    return {"inter": inter.name, "items": split.n_warm_items, "users": split.n_users}


def alignment_report(
    features: Features, lies: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
) -> dict[str, Any]:
    """Per view: image-to-text Recall@1/5 over the catalog (distinct texts as the gallery) and
    CLIPER's untrained view weight (softmax over views of cos / 0.2), mean and std over items;
    `attention` and `calibrated` (z-scored cosines, tau 1): `weight_summary`, with the lying and
    truthful items of a synthetic world (`lies`, from `planted_lies`)."""
    views = features.meta["views"]
    weights = view_attention(features.text_views, features.image, ATTENTION_TAU)
    calibrated = view_attention(features.text_views, features.image, CALIBRATED_TAU, calibrated=True)
    summaries = {"attention": weight_summary(weights.T, views, lies),
                 "calibrated": weight_summary(calibrated.T, views, lies)}
    report: dict[str, Any] = {}
    for v, name in enumerate(views):
        texts, target = np.unique(features.text_views[v], axis=0, return_inverse=True)
        report[name] = {
            **image_to_text_recall(features.image, texts, target.reshape(-1)),
            "attention_mean": float(weights[v].mean()),
            "attention_std": float(weights[v].std()),
            **{key: summary[name] for key, summary in summaries.items()},
        }
    return report


def run_features(
    catalog: Catalog, handle: ClipHandle, out: Path, cfg: FeaturesConfig
) -> tuple[Features, dict[str, Any], bool]:
    """Write `out/features/` (reusing it when its cache key matches); returns the features,
    the alignment report and whether the cache was reused."""
    folder = Path(out) / FEATURES_DIR
    key = cache_key(catalog, handle.identity, cfg)
    reused = _cached_key(folder) == key
    if reused:
        features = Features.load(folder)
    else:
        start = time.perf_counter()
        features = extract_features(catalog, handle, cfg, key)
        features.meta["seconds"] = round(time.perf_counter() - start, 2)
        features.meta["mmrec"] = write_mmrec(folder / MMREC_DIR, catalog, features, cfg.split)
        features.save(folder)
    report = alignment_report(features, planted_lies(catalog.root, features.meta["item_ids"], features.meta["views"]))
    (folder / ALIGNMENT_JSON).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return features, report, reused


def _cached_key(folder: Path) -> str | None:
    """The cache key of complete outputs in `folder`, else None."""
    if not all((folder / name).is_file() for name in (TEXT_FILE, IMAGE_FILE, ITEMS_JSON)):
        return None
    try:
        return json.loads((folder / ITEMS_JSON).read_text(encoding="utf-8")).get("cache_key")
    except json.JSONDecodeError:
        return None
