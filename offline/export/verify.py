"""`offline verify`: check a bundle against the run it was exported from.

Checks, in order (each one a row of the report; a failed check fails the bundle):
- files: every file's sha256 and the format version (`cliper.bundle.read_bundle`);
- provenance: backbone, fusion, dims, views, CLIP identity, user and item ids equal the run's;
- tokenizer: the bundle's `tokenizer.json` gives open_clip's ids on the sample items' prompts;
- preprocessing: `cliper.images` gives open_clip's image tensors on the sample items' images;
- the ONNX image and text encoders and the item tower (both outputs: item vectors and view
  weights) against torch (fp16 graphs reported), and the stored vectors of the sample's cold
  items against the tower's (all of them where the run's kNN table is exact; at least
  `APPROXIMATE_MATCH` of them above `EXACT_MAX_KEYS` warm items, where the stored ones take
  their neighbours from FREEDOM's approximate table and the tower searches exactly);
- items from raw content: images and prompts through the bundle alone (as the service does)
  give the run's features and the offline item vectors;
- item encodings: the sample items' stored view weights and CLIP image and fused-text
  embeddings equal what the service computes from their raw content with the bundle's graphs
  (`cliper.encoding.encode_clip` on the tower's view weights);
- item fields: the sample items' stored text fields are the catalog's, and each has a thumbnail
  exactly when it has a usable image (none in a bundle exported without thumbnails);
- top-50 lists of sample users from the bundle's vectors and index equal the trained model's.
"""

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import open_clip
import torch
from onnxruntime import InferenceSession
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from torch.overrides import TorchFunctionMode

from cliper.bundle import (
    IMAGE_ENCODER,
    ITEM_TOWER,
    TEXT_ENCODER,
    BundleError,
    LoadedBundle,
    fp16_variant,
    read_bundle,
)
from cliper.encoding import ItemEncoding, encode_clip
from cliper.images import preprocess
from cliper.manifest import Dims
from cliper.thumbnails import thumbnail_jpeg
from cliper.tokenizer import TextTokenizer
from cliper.views import chunk_prompts
from offline.clip.model import ClipHandle, ClipSpec
from offline.config import ConfigError
from offline.data.images import ImageLoader
from offline.export.bundle import SOURCE_FILE, TrainedRun, fusion_record, item_fields, load_run, usable_image
from offline.export.onnx_export import TOWER_GRAPH, cpu_session
from offline.models.knn import EXACT_MAX_KEYS
from offline.train.evaluate import model_vectors

TOP_K = 50
PIXEL_TOLERANCE = 1e-5
THUMBNAIL_PIXEL_TOLERANCE = 1.0  # mean |stored - fresh thumbnail| in 0-255 levels (another JPEG encoder's rounding)
TOPK_MARGIN = 1e-5  # a top-k closer than this to another choice can flip with float rounding
APPROXIMATE_MATCH = 0.5  # cold rows equal to the tower's, of those from an approximate kNN table (recall@10 ~0.98)


@dataclass(frozen=True)
class Check:
    """One row of the report."""

    name: str
    passed: bool
    detail: str


class TopkMargins(TorchFunctionMode):
    """Records, for each `torch.topk` over the last axis of a (B, n) tensor, every row's gap
    between its k-th and (k+1)-th value: how far the row is from a different top-k."""

    def __init__(self) -> None:
        super().__init__()
        self.gaps: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if func is torch.topk:
            values, k = args[0], args[1] if len(args) > 1 else kwargs["k"]
            if values.ndim == 2 and k < values.shape[1] and kwargs.get("dim", -1) in (-1, 1):
                top = torch.topk(values, k + 1, dim=-1).values  # the mode is off inside its handler
                self.gaps.append(top[:, k - 1] - top[:, k])
        return result

    def per_row(self, rows: int) -> torch.Tensor:
        """The smallest recorded gap of each of `rows` rows (inf when there was no top-k)."""
        gaps = [gap for gap in self.gaps if len(gap) == rows]
        return torch.stack(gaps).amin(dim=0) if gaps else torch.full((rows,), float("inf"))


@dataclass(frozen=True)
class Expected:
    """What one output of a graph should hold (torch's answer), compared on `rows` (None: all)."""

    output: str
    values: np.ndarray
    rows: np.ndarray | None = None


@dataclass
class Sample:
    """The items and users the parity checks run on (rows of the split / bundle)."""

    items: np.ndarray
    users: np.ndarray


@dataclass
class Served:
    """Sample items (rows) encoded from raw content by the bundle's graphs: the image features,
    the pooled text views and the encoding."""

    items: np.ndarray
    image: np.ndarray
    text_views: np.ndarray
    encoding: ItemEncoding


def cold_rows_check(gaps: np.ndarray, tolerance: float, exact: bool) -> tuple[str, bool]:
    """The stored cold rows against the item tower's, from each row's largest gap -> (detail,
    passed): every row equal where the run's catalog vectors are exact, else at least
    `APPROXIMATE_MATCH` of them (module docstring)."""
    equal = gaps <= tolerance
    if exact or not len(gaps):
        return f"{gaps.max(initial=0.0):.2e}", bool(equal.all())
    detail = (f"{int(equal.sum())} of {len(gaps)} equal (the others' neighbours from the approximate kNN "
              f"table of more than {EXACT_MAX_KEYS:,} warm items)")
    return detail, bool(equal.mean() >= APPROXIMATE_MATCH)


class Verifier:
    """Runs the checks on a loaded bundle and the run it came from."""

    def __init__(self, bundle: LoadedBundle, run: TrainedRun, clip: ClipHandle, sample: Sample, tolerance: float):
        self.bundle = bundle
        self.run = run
        self.clip = clip
        self.sample = sample
        self.tolerance = tolerance
        spec = bundle.manifest.tokenizer
        self.tokenizer = TextTokenizer.from_file(bundle.path(spec.file), spec)
        self.sessions: dict[str, InferenceSession] = {}
        self.catalog = run.load_catalog()
        by_id = self.catalog.items.set_index("item_id", drop=False)
        self.rows = {int(item): by_id.loc[run.split.item_ids[item]].to_dict() for item in sample.items}
        self.images = self._load_images()

    def checks(self) -> list[Callable[[], Check]]:
        return [self.provenance, self.tokenizer_ids, self.preprocessing, self.image_encoder, self.text_encoder,
                self.item_tower, self.raw_content, self.item_encodings, self.item_fields, self.top_lists]

    def provenance(self) -> Check:
        """The manifest, ids and vectors are the run's."""
        manifest, run, spec = self.bundle.manifest, self.run, self.run.spec
        with torch.no_grad():
            users, items = (vectors.numpy() for vectors in model_vectors(run.model))
        expected = {
            "backbone": spec.name,
            "fusion": fusion_record(run),
            "dims": Dims(image=run.content.image_dim, text=run.content.text_dim, item=users.shape[1]),
            "views": run.views,
            "clip": run.features_meta["clip"],
        }
        wrong = [name for name, value in expected.items() if getattr(manifest, name) != value]
        wrong += [name for name, same in (
            ("user_ids", self.bundle.user_ids == run.split.user_ids),
            ("item_ids", self.bundle.item_ids == run.split.item_ids),
            ("user_vectors", np.array_equal(self.bundle.user_vectors, users)),
            ("item_vectors", np.array_equal(self.bundle.item_vectors, items)),
        ) if not same]
        detail = f"{manifest.backbone}/{manifest.fusion.mode}, {len(users)} users, {len(items)} items, vectors equal"
        return Check("provenance", not wrong, f"differs from the run: {wrong}" if wrong else detail)

    def tokenizer_ids(self) -> Check:
        prompts = [prompt for item in self.sample.items for prompt in self._chunks(item)]
        prompts += ["", "  Café &amp; crème \u201cdéjà vu\u201d \U0001f600 ÅNGSTRÖM", "word " * 200]
        ours = self.tokenizer.encode_batch(prompts).input_ids
        differing = int((ours != self.clip.tokenize(prompts).numpy()).any(axis=1).sum())
        detail = f"{len(prompts) - differing} of {len(prompts)} prompts give open_clip's ids"
        return Check("tokenizer", differing == 0, detail)

    def preprocessing(self) -> Check:
        if not self.images:
            return Check("preprocessing", True, "skipped: no sample item has a readable image")
        config = PreprocessCfg(**open_clip.get_model_preprocess_cfg(self.clip.model))
        transform = image_transform_v2(config, is_train=False)
        diff = max(
            float(np.abs(preprocess(image, self.clip.preprocess_config) - transform(image).numpy()).max())
            for image in self.images.values()
        )
        detail = f"max |cliper - open_clip| {diff:.2e} over {len(self.images)} images (limit {PIXEL_TOLERANCE:.0e})"
        return Check("preprocessing", diff <= PIXEL_TOLERANCE, detail)

    def image_encoder(self) -> Check:
        pixels = self._pixels()
        expected = Expected("image_features", self.clip.encode_images(pixels))
        return self._graph_check("image encoder", IMAGE_ENCODER, {"pixel_values": pixels}, [expected])

    def text_encoder(self) -> Check:
        prompts = [prompt for item in self.sample.items for prompt in self._chunks(item)]
        ids = self.tokenizer.encode_batch(prompts).input_ids
        expected = Expected("text_features", self.clip.encode_tokens(torch.from_numpy(ids)))
        return self._graph_check("text encoder", TEXT_ENCODER, {"input_ids": ids}, [expected])

    def item_tower(self) -> Check:
        """The sample items' features, plus random features around them (well separated, so a
        kNN step has clear neighbours even when the catalog's features nearly coincide); the view
        weights on every input, the item vectors on those of stable kNN neighbours."""
        items = torch.from_numpy(self.sample.items)
        content = self.run.content
        generator = torch.Generator().manual_seed(0)
        image = torch.cat([content.image[items], _like(content.image, len(items), generator)])
        text_views = torch.cat([content.text_views[items], _like(content.text_views, len(items), generator)])
        with torch.no_grad():
            expected = self.run.model.content_item_vectors(image, text_views).numpy()
            weights = self.run.model.content_view_weights(image, text_views).numpy()
        feeds = {"image_features": image.numpy(), "text_view_features": text_views.numpy()}
        stable = self._stable_rows(image, text_views)
        vectors_name, weights_name = TOWER_GRAPH.outputs
        outputs = [Expected(vectors_name, expected, stable), Expected(weights_name, weights)]
        check = self._graph_check("item tower", ITEM_TOWER, feeds, outputs)
        cold = np.isin(self.sample.items, self.run.split.cold_items) & stable[: len(items)]
        gaps = np.abs(self.bundle.item_vectors[self.sample.items[cold]] - expected[: len(items)][cold]).max(axis=1)
        stored, cold_passed = cold_rows_check(gaps, self.tolerance, self.run.model.exact_catalog_vectors)
        detail = (
            f"{check.detail}; item vectors on {int(stable.sum())} of {len(image)} inputs ({len(items)} items + "
            f"{len(items)} random), view weights on all; cold rows of item_vectors.npy {stored}"
            f"{self._unstable_note(stable[: len(items)])}"
        )
        return Check(check.name, check.passed and cold_passed, detail)

    @cached_property
    def served(self) -> Served | None:
        """The sample items that have a readable image, encoded from their images and text by
        the bundle alone, as the service encodes an ingested item; None when there are none."""
        items = [int(item) for item in self.sample.items if item in self.images]
        if not items:
            return None
        manifest = self.bundle.manifest
        image = self._session(IMAGE_ENCODER).run(None, {"pixel_values": self._pixels(items)})[0]
        text = self._session(TEXT_ENCODER)
        views = []
        for item in items:
            per_view = []
            for chunks in self._view_chunks(item):
                ids = self.tokenizer.encode_batch(chunks).input_ids
                features = text.run(None, {"input_ids": ids})[0]
                pooled = features.sum(axis=0) if manifest.chunking.pooling == "sum" else features.mean(axis=0)
                per_view.append(pooled)
            views.append(per_view)
        text_views = np.asarray(views, dtype=np.float32)
        vectors, weights = self._session(ITEM_TOWER).run(
            list(TOWER_GRAPH.outputs), {"image_features": image, "text_view_features": text_views}
        )
        clip_image, clip_text = encode_clip(image, text_views, weights)
        return Served(np.asarray(items), image, text_views, ItemEncoding(vectors, clip_image, clip_text, weights))

    def raw_content(self) -> Check:
        """Images and text of the sample items through the bundle alone, as the service does."""
        served = self.served
        if served is None:
            return Check("raw content", True, "skipped: no sample item has a readable image")
        rows = torch.from_numpy(served.items)
        offline_image, offline_views = self.run.content.image[rows], self.run.content.text_views[rows]
        with torch.no_grad():
            offline = self.run.model.content_item_vectors(offline_image, offline_views).numpy()
        stable = self._stable_rows(offline_image, offline_views)
        diffs = {
            "image": np.abs(served.image - offline_image.numpy()).max(),
            "text views": np.abs(served.text_views - offline_views.numpy()).max(),
            "item vector": np.abs(served.encoding.vector - offline)[stable].max(initial=0.0),
        }
        passed = all(diff <= self.tolerance for diff in diffs.values())
        listed = ", ".join(f"{name} {diff:.2e}" for name, diff in diffs.items())
        detail = f"{len(rows)} items vs the run's features and vectors: {listed}{self._unstable_note(stable)}"
        return Check("raw content", passed, detail)

    def item_encodings(self) -> Check:
        """The stored view weights and CLIP embeddings equal the service's from raw content."""
        served = self.served
        if served is None:
            return Check("item encodings", True, "skipped: no sample item has a readable image")
        bundle, rows = self.bundle, served.items
        diffs = {
            "view weights": np.abs(bundle.view_weights[rows] - served.encoding.view_weights).max(),
            "CLIP image": np.abs(bundle.clip_image[rows] - served.encoding.clip_image).max(),
            "CLIP text": np.abs(bundle.clip_text[rows] - served.encoding.clip_text).max(),
        }
        passed = all(diff <= self.tolerance for diff in diffs.values())
        listed = ", ".join(f"{name} {diff:.2e}" for name, diff in diffs.items())
        return Check("item encodings", passed, f"{len(rows)} items, stored vs the service's from raw content: {listed}")

    def item_fields(self) -> Check:
        """The stored text fields are the catalog's; a thumbnail of the image exactly where there
        is a usable image (none at all in a bundle exported without thumbnails)."""
        bundle, items = self.bundle, [int(item) for item in self.sample.items]
        expected = item_fields([self.rows[item] for item in items], bundle.manifest.views)
        wrong_fields = [bundle.item_ids[item] for item, fields in zip(items, expected, strict=True)
                        if bundle.item_fields[item] != fields]
        thumbnails = bundle.thumbnails
        wrong_thumbnails = [] if thumbnails is None else [
            bundle.item_ids[item] for item in items if not _thumbnail_fits(thumbnails.get(item), self.images.get(item))
        ]
        parts = [f"{len(items) - len(wrong_fields)} of {len(items)} items' fields are the catalog's"]
        parts.append("no thumbnails (exported without)" if thumbnails is None else
                     f"{len(items) - len(wrong_thumbnails)} thumbnails right "
                     f"({sum(item in self.images for item in items)} items have a usable image)")
        parts += [f"{what}: {ids[:5]}" for what, ids in (("wrong fields", wrong_fields),
                                                         ("wrong thumbnails", wrong_thumbnails)) if ids]
        return Check("item fields", not (wrong_fields or wrong_thumbnails), "; ".join(parts))

    def top_lists(self) -> Check:
        users = torch.from_numpy(self.sample.users)
        with torch.no_grad():
            scores = self.run.model.full_sort_predict(users).numpy()
        k = min(TOP_K, scores.shape[1])
        expected = -np.sort(-scores, axis=1)[:, :k]
        vectors = self.bundle.user_vectors[self.sample.users]
        _, found = self.bundle.index.search(np.ascontiguousarray(vectors), k)
        exact = self.bundle.manifest.index.factory.strip() == "Flat"
        if not exact:  # an approximate index is measured, the exact lists come from the vectors
            brute = np.argsort(-(vectors @ self.bundle.item_vectors.T), axis=1, kind="stable")[:, :k]
            overlap = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(brute, found, strict=True)])
            found = brute
        # compare the model's scores of the bundle's lists, so tied items may swap places
        got = np.take_along_axis(scores, found, axis=1)
        diff = float(np.abs(got - expected).max())
        same_order = int((found == np.argsort(-scores, axis=1, kind="stable")[:, :k]).all(axis=1).sum())
        detail = f"{len(users)} users, max score gap {diff:.2e}, {same_order} lists in identical order"
        if not exact:
            detail += f"; index {self.bundle.manifest.index.factory} recall@{k} {overlap:.3f}"
        return Check(f"top-{k}", diff <= self.tolerance, detail)

    def _stable_rows(self, image: torch.Tensor, text_views: torch.Tensor) -> np.ndarray:
        """Which rows have a content vector that float rounding cannot move.

        A kNN step (FREEDOM's item graph) picks neighbours with a top-k; when a row's k-th and
        next similarity are a rounding error apart, ONNX Runtime's rounding may pick the other
        neighbour, and torch itself does in another batch. Such rows are not compared.
        """
        margins = TopkMargins()
        with torch.no_grad(), margins:
            self.run.model.content_item_vectors(image, text_views)
        return (margins.per_row(len(image)) > TOPK_MARGIN).numpy()

    @staticmethod
    def _unstable_note(stable: np.ndarray) -> str:
        left_out = int((~stable).sum())
        return f" ({left_out} of {len(stable)} items not compared: near-tied kNN neighbours)" if left_out else ""

    def _session(self, graph: str) -> InferenceSession:
        if graph not in self.sessions:
            self.sessions[graph] = cpu_session(self.bundle.path(graph))
        return self.sessions[graph]

    def _graph_check(self, name: str, graph: str, feeds: dict[str, np.ndarray], expected: list[Expected]) -> Check:
        """ONNX vs torch on `feeds`, each output on its rows; the fp16 graph's gaps reported."""
        if any(output.rows is not None and not output.rows.any() for output in expected):
            reason = "every input has near-tied kNN neighbours: the content features nearly coincide (untrained CLIP?)"
            return Check(name, False, reason)
        names = [output.output for output in expected]
        diffs = _gaps(self._session(graph).run(names, feeds), expected)
        listed = _listed(names, [f"{diff:.2e}" for diff in diffs])
        detail = f"max |onnx - torch| {listed} (limit {self.tolerance:.0e})"
        half = fp16_variant(graph)
        if half in self.bundle.manifest.files:
            half_out = self._session(half).run(names, feeds)
            scales = [float(np.abs(_rows(output.values, output)).max()) for output in expected]
            gaps = [f"{gap:.2e} ({gap / scale:.1e} of max |x|)"
                    for gap, scale in zip(_gaps(half_out, expected), scales, strict=True)]
            detail += f"; fp16 {_listed(names, gaps)}"
            if not all(np.isfinite(out).all() for out in half_out):
                return Check(name, False, detail + ": the fp16 graph gives NaN or inf")
        return Check(name, all(diff <= self.tolerance for diff in diffs), detail)

    def _load_images(self) -> dict[int, Image.Image]:
        """The sample items' images by item row, loaded as the features stage loads them;
        items whose image is bad (a placeholder offline) are left out."""
        loader = ImageLoader()
        images = {item: usable_image(loader, self.catalog, row) for item, row in self.rows.items()}
        return {item: image for item, image in images.items() if image is not None}

    def _pixels(self, items: list[int] | None = None) -> np.ndarray:
        """Preprocessed images of `items` (default: every readable one, else the placeholder)."""
        chosen = [self.images[item] for item in (list(self.images) if items is None else items)]
        chosen = chosen or [ImageLoader().placeholder()]
        return np.stack([preprocess(image, self.clip.preprocess_config) for image in chosen])

    def _view_chunks(self, item: int) -> list[list[str]]:
        manifest = self.bundle.manifest
        row, context = self.rows[item], manifest.tokenizer.context_length
        return [
            chunk_prompts(template, value, self.tokenizer.count_tokens, context, manifest.chunking.max_chunks)
            for template, value in manifest.views.view_texts(row)
        ]

    def _chunks(self, item: int) -> list[str]:
        return [chunk for chunks in self._view_chunks(item) for chunk in chunks]


def verify_bundle(
    bundle_dir: Path,
    run_dir: Path | None = None,
    items: int = 16,
    users: int = 32,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> list[Check]:
    """Run every check; stops after the file check when the bundle cannot be read."""
    try:
        bundle = read_bundle(bundle_dir, verify=True)
    except BundleError as exc:
        return [Check("files", False, str(exc))]
    manifest = bundle.manifest
    files = Check("files", True, f"{len(manifest.files)} files match their sha256; format {manifest.format_version}")
    source = json.loads(bundle.path(SOURCE_FILE).read_text(encoding="utf-8")) if SOURCE_FILE in manifest.files else {}
    run_dir = run_dir or (Path(source["run"]) if "run" in source else None)
    if run_dir is None or not Path(run_dir).is_dir():
        return [files, Check("run", False, f"the run folder {run_dir} is not there; pass --run RUN")]
    try:
        run = load_run(run_dir)
        clip = run.load_clip(ClipSpec.model_validate(source["clip"]) if "clip" in source else None)
    except (ConfigError, FileNotFoundError) as exc:
        return [files, Check("run", False, f"cannot load the run {run_dir}: {exc}")]
    verifier = Verifier(bundle, run, clip, _sample(run, items, users, seed), tolerance)
    return [files, *(check() for check in verifier.checks())]


def _rows(values: np.ndarray, output: Expected) -> np.ndarray:
    return values if output.rows is None else values[output.rows]


def _gaps(outputs: list[np.ndarray], expected: list[Expected]) -> list[float]:
    """Max |output - expected| of each output on its rows."""
    return [float(np.abs(_rows(out, output) - _rows(output.values, output)).max())
            for out, output in zip(outputs, expected, strict=True)]


def _listed(names: list[str], values: list[str]) -> str:
    """One value as is; several each after its output's name."""
    if len(values) == 1:
        return values[0]
    return ", ".join(f"{name} {value}" for name, value in zip(names, values, strict=True))


def _thumbnail_fits(jpeg: bytes | None, image: Image.Image | None) -> bool:
    """Whether `jpeg` is the thumbnail of `image` (the same size and pixels as a fresh one, to an
    encoder's rounding), or absent when there is no image."""
    if image is None or jpeg is None:
        return image is None and jpeg is None
    try:
        stored = _decoded(jpeg)
    except (OSError, ValueError):
        return False
    fresh = _decoded(thumbnail_jpeg(image))
    return stored.shape == fresh.shape and float(np.abs(stored - fresh).mean()) <= THUMBNAIL_PIXEL_TOLERANCE


def _decoded(jpeg: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(jpeg)) as image:
        if image.format != "JPEG":
            raise ValueError(f"a {image.format} image, not a JPEG")
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def _like(features: torch.Tensor, rows: int, generator: torch.Generator) -> torch.Tensor:
    """Random rows with the per-dimension mean and spread of `features` (N, ...)."""
    noise = torch.randn((rows, *features.shape[1:]), generator=generator)
    return features.mean(dim=0) + noise * features.std(dim=0).clamp(min=1e-3)


def _sample(run: TrainedRun, items: int, users: int, seed: int) -> Sample:
    """Half warm, half cold items (as many as there are), and random users."""
    rng = np.random.default_rng(seed)
    cold = run.split.cold_items
    warm = np.setdiff1d(np.arange(run.split.n_items), cold)
    n_cold = min(len(cold), items // 2)
    chosen = np.concatenate([
        rng.choice(cold, n_cold, replace=False),
        rng.choice(warm, min(len(warm), items - n_cold), replace=False),
    ])
    chosen_users = rng.choice(run.split.n_users, min(users, run.split.n_users), replace=False)
    return Sample(np.sort(chosen).astype(np.int64), np.sort(chosen_users))


def report(checks: list[Check]) -> str:
    """A markdown table of the checks."""
    lines = ["| check | result | detail |", "| --- | --- | --- |"]
    lines += [f"| {c.name} | {'ok' if c.passed else 'FAILED'} | {c.detail} |" for c in checks]
    return "\n".join(lines)
