"""`offline export`: a train run folder -> a model bundle (docs/architecture.md, "Model bundle").

The run folder (`offline train`) gives the model spec and weights, the split, and, through its
config, the catalog and the features folder; the features' `items.json` names the CLIP they
were made with. The export traces the CLIP encoders and the item tower to ONNX, writes the
tokenizer, computes every item's view weights and CLIP embeddings from its features (the
model's fusion, then `cliper.encoding.encode_clip`, as the service encodes an ingested item),
takes its text fields and a JPEG thumbnail of its image from the catalog, and hands everything
to `cliper.bundle.write_bundle`, which builds the two FAISS indexes and swaps the finished
folder into place.
"""

import json
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from cliper.bundle import (
    IMAGE_ENCODER,
    ITEM_TOWER,
    TEXT_ENCODER,
    BundleContent,
    Seen,
    fp16_variant,
    int8_variant,
    write_bundle,
)
from cliper.encoding import ItemEncoding, encode_clip
from cliper.manifest import Chunking, Dims, Fusion, IndexSpec, Manifest, Training
from cliper.thumbnails import thumbnail_jpeg
from cliper.views import ViewsConfig
from offline.clip.model import ClipHandle, ClipSpec, load_clip, read_clip_spec
from offline.config import ConfigError, StrictModel
from offline.data.catalog import Catalog, load_catalog, resolve_views
from offline.data.images import ImageLoader
from offline.data.split import SplitData
from offline.export.onnx_export import convert_to_fp16, export_clip_encoders, export_item_tower, quantize_to_int8
from offline.export.tokenizer import export_tokenizer
from offline.models import ContentFeatures, InteractionGraph, ModelSpec, Recommender
from offline.train.evaluate import model_vectors
from offline.train.fusion_grid import fusion_manifest
from offline.train.run import CHECKPOINT_FILE, RunConfig, load_content
from offline.train.trainer import load_checkpoint

SOURCE_FILE = "source.json"  # where the bundle came from: the run folder and the CLIP spec
PROJECT_ROOT = Path(__file__).resolve().parents[2]
IDENTITY_KEYS = ("model", "pretrained", "weights_sha256", "embed_dim", "image_size", "context_length")
ENCODE_BATCH = 4096  # items per step of the view weights and CLIP embeddings (bounds the copies' memory)

log = logging.getLogger(__name__)


class ExportConfig(StrictModel):
    """Settings of `offline export`."""

    index_factory: str = "Flat"  # FAISS factory string: "Flat" (exact), "IVF256,Flat", "HNSW32", ...
    search_params: str = ""  # FAISS ParameterSpace string applied at load, e.g. "nprobe=16"
    clip_index_factory: str = "Flat"  # the same for the index of the items' CLIP search vectors
    clip_search_params: str = ""
    fp16: bool = False  # also write fp16 graphs (`*.fp16.onnx`), served only on the CUDA provider
    int8: bool = False  # also write int8 encoders (`*.int8.onnx`) for CPU serving
    thumbnails: bool = True  # a JPEG thumbnail of every item's image (GET /items/{id}/image)


@dataclass
class TrainedRun:
    """A train run folder read back: its settings, split, content features and best model."""

    root: Path
    config: RunConfig
    split: SplitData
    content: ContentFeatures
    features_meta: dict[str, Any]
    views: ViewsConfig
    spec: ModelSpec
    model: Recommender
    metrics: dict[str, Any]

    def load_catalog(self) -> Catalog:
        return load_catalog(Path(self.config.data), self.views)

    def clip_spec(self) -> ClipSpec:
        """The CLIP the features were made with: the features run's own `clip/` folder when
        there is one (where train-clip writes), else the identity's model and pretrained tag."""
        own = Path(self.config.features).parent / "clip"
        if (own / "clip.json").is_file():
            return read_clip_spec(own)
        identity = self.features_meta["clip"]
        return ClipSpec(model=identity["model"], pretrained=identity["pretrained"])

    def load_clip(self, spec: ClipSpec | None = None) -> ClipHandle:
        """Load the CLIP (default: `clip_spec()`) and check it is the one behind the features."""
        clip = load_clip(spec or self.clip_spec(), "cpu")
        expected = {key: self.features_meta["clip"].get(key) for key in IDENTITY_KEYS}
        actual = {key: clip.identity.get(key) for key in IDENTITY_KEYS}
        if actual != expected:
            raise ConfigError(
                f"the CLIP {clip.spec} is not the one the features of {self.root} were made with: "
                f"it is {actual}, the features say {expected}; pass the right --clip"
            )
        return clip


def load_run(root: Path) -> TrainedRun:
    """Read a run folder written by `offline train` (multi-modal backbones only)."""
    root = Path(root).resolve()
    for name in ("config.yaml", "metrics.json", CHECKPOINT_FILE, "split"):
        if not (root / name).exists():
            raise ConfigError(f"{root / name} not found: is {root} a run folder written by `python -m offline train`?")
    config = RunConfig.from_yaml(root / "config.yaml")
    if not config.model_spec().model_class().multimodal:
        raise ConfigError(
            f"{root} trained the ID-only backbone {config.model!r}: it cannot embed new items from their "
            "content, which the bundle's item tower needs; train a multi-modal backbone (vbpr, freedom, bm3)"
        )
    if config.drop_views:
        raise ConfigError(
            f"{root} is a view-ablation run (drop_views {config.drop_views}); its item tower does not take "
            "the catalog's views, so it cannot be served: export a run that keeps every view"
        )
    split = SplitData.load(root / "split")
    content = load_content(config.features, split)
    features_meta = json.loads((Path(config.features) / "items.json").read_text(encoding="utf-8"))
    views = resolve_views(Path(config.data), config.views)
    if tuple(views.view_names) != content.views:
        raise ConfigError(
            f"the catalog's views {views.view_names} differ from the features' views {list(content.views)}; "
            "re-run features with the run's views"
        )
    model, saved = load_checkpoint(root / CHECKPOINT_FILE, InteractionGraph.from_split(split), content, "cpu")
    metrics = json.loads((root / "metrics.json").read_text(encoding="utf-8"))
    return TrainedRun(root, config, split, content, features_meta, views, saved["spec"], model, metrics)


def export_bundle(run_dir: Path, out: Path, cfg: ExportConfig, clip_spec: ClipSpec | None = None) -> Manifest:
    """Export the run at `run_dir` as a bundle at `out` (replacing a bundle there)."""
    started = time.perf_counter()
    run = load_run(run_dir)
    clip = run.load_clip(clip_spec)
    with torch.no_grad():
        users, items = (vectors.float().cpu().numpy() for vectors in model_vectors(run.model))
    encodings = item_encodings(run, items)
    catalog = run.load_catalog()
    rows = catalog_rows(run, catalog)
    with tempfile.TemporaryDirectory(prefix="cliper-export-") as tmp:
        folder = Path(tmp)
        log.info("exporting the ONNX graphs")
        export_clip_encoders(clip, folder / IMAGE_ENCODER, folder / TEXT_ENCODER)
        export_item_tower(run.model, folder / ITEM_TOWER)
        extra: dict[str, Path | bytes] = {
            SOURCE_FILE: json.dumps({"run": str(run.root), "clip": clip.spec.model_dump(mode="json")}).encode()
        }
        if cfg.fp16:
            for graph in (IMAGE_ENCODER, TEXT_ENCODER, ITEM_TOWER):
                extra[fp16_variant(graph)] = convert_to_fp16(folder / graph, folder / fp16_variant(graph))
        if cfg.int8:  # the item tower is small next to the encoders: it stays fp32
            for graph in (IMAGE_ENCODER, TEXT_ENCODER):
                extra[int8_variant(graph)] = quantize_to_int8(folder / graph, folder / int8_variant(graph))
        tokenizer = export_tokenizer(clip.tokenizer, folder / "tokenizer.json")
        train = run.split.train
        content = BundleContent(
            image_encoder=folder / IMAGE_ENCODER,
            text_encoder=folder / TEXT_ENCODER,
            item_tower=folder / ITEM_TOWER,
            tokenizer=folder / tokenizer.file,
            user_ids=run.split.user_ids,
            user_vectors=users,
            item_ids=run.split.item_ids,
            item_vectors=encodings.vector,
            seen=Seen.from_pairs(train, run.split.n_users),
            popularity=np.bincount(train[:, 1], minlength=run.split.n_items).astype(np.float32),
            item_fields=item_fields(rows, run.views),
            clip_image=encodings.clip_image,
            clip_text=encodings.clip_text,
            view_weights=encodings.view_weights,
            thumbnails=thumbnails(rows, catalog) if cfg.thumbnails else None,
            extra_files=extra,
        )
        fields = {
            "git_commit": git_commit(),
            "backbone": run.spec.name,
            "fusion": fusion_record(run),
            "dims": Dims(image=run.content.image_dim, text=run.content.text_dim, item=items.shape[1]),
            "clip": run.features_meta["clip"],
            "views": run.views,
            "chunking": Chunking(max_chunks=run.features_meta["max_chunks"], pooling=run.features_meta["pooling"]),
            "preprocess": clip.preprocess_config,
            "tokenizer": tokenizer,
            "metrics": flatten_metrics(run.metrics),
            "training": training_record(run),
            "index": IndexSpec(factory=cfg.index_factory, search_params=cfg.search_params),
            "clip_index": IndexSpec(factory=cfg.clip_index_factory, search_params=cfg.clip_search_params),
            "supports_cold_items": True,
        }
        manifest = write_bundle(out, fields, content)
    log.info("exported %s to %s in %.1f s", run.root, out, time.perf_counter() - started)
    return manifest


def item_encodings(run: TrainedRun, item_vectors: np.ndarray) -> ItemEncoding:
    """Every item's encoding: its vector from `item_vectors`, its view weights from its content
    features through the model's fusion, its CLIP embeddings from `encode_clip` on the same
    features (the service's path for an ingested item)."""
    weights, images, texts = [], [], []
    for start in range(0, run.split.n_items, ENCODE_BATCH):
        batch = slice(start, start + ENCODE_BATCH)
        image, text_views = run.content.image[batch], run.content.text_views[batch]
        with torch.no_grad():
            batch_weights = run.model.content_view_weights(image, text_views).numpy()
        clip_image, clip_text = encode_clip(image.numpy(), text_views.numpy(), batch_weights)
        weights.append(batch_weights)
        images.append(clip_image)
        texts.append(clip_text)
    return ItemEncoding(item_vectors, np.concatenate(images), np.concatenate(texts), np.concatenate(weights))


def catalog_rows(run: TrainedRun, catalog: Catalog) -> list[dict[str, Any]]:
    """The catalog's row of every item of the split, in the split's order."""
    by_id = catalog.items.set_index("item_id", drop=False)
    missing = [item for item in run.split.item_ids if item not in by_id.index]
    if missing:
        raise ConfigError(
            f"the catalog {catalog.root} has no row for {len(missing)} of the run's {run.split.n_items} items, "
            f"e.g. {missing[:5]}; export with the catalog the run was trained on"
        )
    return by_id.loc[run.split.item_ids].to_dict("records")


def item_fields(rows: list[dict[str, Any]], views: ViewsConfig) -> list[dict[str, str]]:
    """Each item's text in the views' columns (what the service's filters match), blank ones left out."""
    return [{column: str(row[column]) for column in views.columns if str(row[column]).strip()} for row in rows]


def usable_image(loader: ImageLoader, catalog: Catalog, row: dict[str, Any]) -> Image.Image | None:
    """The item's image as the features stage loads it, or None when it has none or it is bad
    (the features then saw `loader`'s placeholder, recorded in `loader.bad_images`)."""
    bad = len(loader.bad_images)
    image = loader.load(row["item_id"], catalog.image_file(row))
    return image if len(loader.bad_images) == bad else None


def thumbnails(rows: list[dict[str, Any]], catalog: Catalog) -> list[bytes | None]:
    """A JPEG thumbnail of each item's image; None for an item without a usable one (logged once)."""
    loader = ImageLoader()
    jpegs = []
    for row in tqdm(rows, desc="thumbnails", unit="item"):
        image = usable_image(loader, catalog, row)
        jpegs.append(None if image is None else thumbnail_jpeg(image))
    if loader.bad_images:
        examples = "; ".join(f"{item}: {reason}" for item, reason in loader.bad_images[:3])
        log.warning("%d of %d items have no usable image and get no thumbnail, e.g. %s",
                    len(loader.bad_images), len(rows), examples)
    return jpegs


def training_record(run: TrainedRun) -> Training:
    """Whether the served vectors saw every interaction (a refit) or an evaluation split's."""
    return Training(
        data="all_interactions" if run.metrics.get("refit") else "evaluation_split",
        split=run.metrics["split"],
        epochs=run.metrics["best_epoch"],
    )


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a run's metrics.json, keyed by path: {"test/recall@20": 0.1, ...}."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def fusion_record(run: TrainedRun) -> Fusion:
    """The manifest's record of the run's fusion: tau, alpha and cosine statistics where the
    fusion uses them, and the grid validation chose it among (`fusion_manifest`)."""
    return fusion_manifest(run.model, run.spec, run.metrics)


def git_commit() -> str | None:
    """HEAD of the project's git checkout, or None outside one (e.g. an installed package)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def bundle_size(folder: Path) -> int:
    """Bytes of every file in a bundle folder."""
    return sum(path.stat().st_size for path in Path(folder).iterdir() if path.is_file())
