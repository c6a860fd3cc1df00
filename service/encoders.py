"""The bundle's three ONNX graphs behind one call: item content in, item encodings out.

`decode` and `prepare` do the per-item work (image decoding, preprocessing, prompts and chunking)
and reject bad input; `encode` runs a batch of prepared items through the image encoder, the text
encoder (all views and chunks of the batch at once, then pooled per view) and the item tower,
whose two outputs are the item vectors and the view weights; with the CLIP embeddings they make
each item's packed encoding (`cliper.encoding`). `embed_text` and `embed_image` put a search
query into the CLIP space.

Which file serves each graph is the precision's choice (`graph_file`): the fp32 graphs, their fp16
twins (only on the CUDA provider) or the encoders' int8 twins (for CPU); every twin takes and
gives float32, so nothing else changes.
"""

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from cliper.bundle import (
    IMAGE_ENCODER,
    ITEM_TOWER,
    TEXT_ENCODER,
    BundleError,
    LoadedBundle,
    fp16_variant,
    int8_variant,
)
from cliper.encoding import ItemEncoding, encode_clip, unit
from cliper.images import decode_image, preprocess
from service.config import Precision
from service.errors import BadInput
from service.metrics import Metrics
from cliper.tokenizer import TextTokenizer
from service.text import item_prompts, text_feeds

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
INT8_GRAPHS = (IMAGE_ENCODER, TEXT_ENCODER)  # the item tower has no int8 twin: it is small


def choose_providers(preference: Sequence[str]) -> list[str]:
    """The preferred ONNX Runtime providers this runtime has, in order; CPU when none is."""
    available = ort.get_available_providers()
    chosen = [provider for provider in preference if provider in available]
    if not chosen:
        log.warning("none of the providers %s is available (have %s); using CPU", list(preference), available)
        chosen = ["CPUExecutionProvider"]
    log.info("ONNX Runtime providers: %s (available: %s)", chosen, available)
    return chosen


def graph_file(graph: str, precision: Precision, on_cuda: bool, files: Collection[str]) -> str:
    """The bundle file that serves `graph` (an fp32 graph's name) at `precision`.

    fp32: the graph itself. fp16: its fp16 twin, on the CUDA provider only. int8: the encoders'
    int8 twins, the item tower in fp32. auto: the fp16 twin on CUDA, the int8 twin on CPU, where
    the bundle (`files`) has one, else the graph itself. An explicit precision the bundle or the
    provider cannot give is an error, not a quiet fallback.
    """
    if precision == "fp16" and not on_cuda:
        raise BundleError(
            "precision fp16 needs the CUDA provider, and ONNX Runtime runs on the CPU here: fp16 graphs are "
            "for GPUs; set CLIPER_PRECISION to auto, fp32 or int8"
        )
    if precision == "auto":
        twin = fp16_variant(graph) if on_cuda else int8_variant(graph)
        return twin if twin in files else graph
    if precision == "fp32" or (precision == "int8" and graph not in INT8_GRAPHS):
        return graph
    twin = fp16_variant(graph) if precision == "fp16" else int8_variant(graph)
    if twin not in files:
        raise BundleError(
            f"precision {precision}: the bundle has no {twin}; export it with --{precision}, or set "
            "CLIPER_PRECISION to auto or fp32"
        )
    return twin


class OnnxModel:
    """One ONNX graph whose input names are checked against what the service will feed."""

    def __init__(self, path: Path, providers: list[str], threads: int, inputs: Sequence[str]) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # the graphs run sequentially (ORT's default mode): no inter-op pool
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # ONNX Runtime raises its own exception types for bad graphs
            raise BundleError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
        self.path = path
        self.inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if sorted(self.inputs) != sorted(inputs):
            raise BundleError(f"{path}: inputs are {sorted(self.inputs)}, the manifest implies {sorted(inputs)}")
        self.output_shape = self.session.get_outputs()[0].shape
        self.outputs = [output.name for output in self.session.get_outputs()]

    def check_dim(self, name: str | None, axis: int, expected: int) -> None:
        """Fail on a static dimension that contradicts the manifest (symbolic ones pass)."""
        shape = self.output_shape if name is None else self.inputs[name]
        actual = shape[axis] if -len(shape) <= axis < len(shape) else None
        if isinstance(actual, int) and actual != expected:
            what = "output" if name is None else f"input {name!r}"
            raise BundleError(f"{self.path}: {what} axis {axis} is {actual}, the manifest says {expected}")

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, dict(feeds))[0]

    def run_all(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, dict(feeds))


@dataclass
class PreparedItem:
    """One item ready for the encoders: pixels (3, S, S) and each view's prompts (chunks)."""

    pixels: np.ndarray
    prompts: list[list[str]]


class ItemEncoder:
    """Image encoder + text encoder + item tower of a bundle, with the service's metrics."""

    def __init__(
        self,
        bundle: LoadedBundle,
        metrics: Metrics,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int = 0,
        max_image_pixels: int = 40_000_000,
        max_image_aspect_ratio: float = 20.0,
        precision: Precision = "auto",
    ) -> None:
        manifest = bundle.manifest
        self.manifest = manifest
        self.metrics = metrics
        self.max_image_pixels = max_image_pixels
        self.max_image_aspect_ratio = max_image_aspect_ratio
        self.tokenizer = TextTokenizer.from_file(bundle.path(manifest.tokenizer.file), manifest.tokenizer)
        chosen = choose_providers(providers)
        text_inputs = ["input_ids", "attention_mask"] if manifest.tokenizer.uses_attention_mask else ["input_ids"]
        tower_inputs = ["image_features", "text_view_features"]
        # The fp32 tower (small) loads first: its session's providers say whether CUDA really
        # runs, since ONNX Runtime falls back to the CPU when the CUDA provider cannot start.
        self.tower = OnnxModel(bundle.path(ITEM_TOWER), chosen, threads, tower_inputs)
        self.providers = self.tower.session.get_providers()
        files = {graph: graph_file(graph, precision, CUDA in self.providers, manifest.files)
                 for graph in (IMAGE_ENCODER, TEXT_ENCODER, ITEM_TOWER)}
        self.graph_files = files
        log.info("precision %s on %s: serving %s", precision, self.providers[0], list(files.values()))
        self.image = OnnxModel(bundle.path(files[IMAGE_ENCODER]), chosen, threads, ["pixel_values"])
        self.text = OnnxModel(bundle.path(files[TEXT_ENCODER]), chosen, threads, text_inputs)
        self._trim_padding = not isinstance(self.text.inputs["input_ids"][-1], int)
        if files[ITEM_TOWER] != ITEM_TOWER:
            self.tower = OnnxModel(bundle.path(files[ITEM_TOWER]), chosen, threads, tower_inputs)
        n_views = len(manifest.views.view_names)
        self.image.check_dim("pixel_values", -1, manifest.preprocess.image_size)
        self.image.check_dim(None, -1, manifest.dims.image)
        self.text.check_dim("input_ids", -1, manifest.tokenizer.context_length)
        self.text.check_dim(None, -1, manifest.dims.text)
        self.tower.check_dim("text_view_features", 1, n_views)
        self.tower.check_dim(None, -1, manifest.dims.item)
        if self.tower.outputs != ["item_vectors", "view_weights"]:
            raise BundleError(f"{self.tower.path}: outputs are {self.tower.outputs}, expected item_vectors and "
                              "view_weights; re-export the bundle")

    def decode(self, data: bytes) -> Image.Image:
        """Client image bytes -> RGB image, or `BadInput` saying what is wrong with them."""
        with self.metrics.timed("decode"):
            try:
                return decode_image(data, self.max_image_pixels, self.max_image_aspect_ratio).convert("RGB")
            except ValueError as exc:
                raise BadInput(str(exc)) from exc
            except Exception as exc:  # Pillow's format plugins raise many types on hostile bytes
                raise BadInput(f"the image cannot be decoded: {type(exc).__name__}: {exc}") from exc

    def prepare(self, fields: Mapping[str, str], image: Image.Image) -> PreparedItem:
        """Preprocess the image and build each view's prompts (chunked) for one item."""
        with self.metrics.timed("prepare"):
            pixels = preprocess(image, self.manifest.preprocess)
            prompts = item_prompts(self.manifest.views, fields, self.tokenizer, self.manifest.chunking)
        return PreparedItem(pixels, prompts)

    def encode(self, items: Sequence[PreparedItem]) -> np.ndarray:
        """Packed item encodings `(B, layout.width)` float32 for a batch of prepared items."""
        self.metrics.batch_size.observe(len(items))
        with self.metrics.timed("encode"):
            image_features = self.image.run({"pixel_values": np.stack([item.pixels for item in items])})
            image_features = image_features.astype(np.float32)
            text_views = self._text_views(items)
        with self.metrics.timed("tower"):
            vectors, weights = self.tower.run_all({"image_features": image_features, "text_view_features": text_views})
        clip_image, clip_text = encode_clip(image_features, text_views, weights)
        return np.ascontiguousarray(ItemEncoding(vectors, clip_image, clip_text, weights).pack())

    def embed_text(self, text: str) -> np.ndarray:
        """The unit CLIP embedding `(D,)` of a search text (the text as typed, no view prompt)."""
        with self.metrics.timed("encode"):
            return unit(self.text.run(self.text_feeds([text])))[0]

    def embed_image(self, image: Image.Image) -> np.ndarray:
        """The unit CLIP embedding `(D,)` of a search image."""
        pixels = preprocess(image, self.manifest.preprocess)
        with self.metrics.timed("encode"):
            return unit(self.image.run({"pixel_values": pixels[None]}))[0]

    def text_feeds(self, prompts: list[str]) -> dict[str, np.ndarray]:
        """The text encoder's inputs for a batch of prompts (padding trimmed where the graph allows)."""
        return text_feeds(self.tokenizer, prompts, self._trim_padding)

    def _text_views(self, items: Sequence[PreparedItem]) -> np.ndarray:
        """(B, V, Dt): each view's chunk features pooled (sum or mean) as the offline job pools them."""
        chunks = [chunk for item in items for view in item.prompts for chunk in view]
        counts = np.array([len(view) for item in items for view in item.prompts])
        features = self.text.run(self.text_feeds(chunks)).astype(np.float32)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pooled = np.add.reduceat(features, starts, axis=0)
        if self.manifest.chunking.pooling == "mean":
            pooled /= counts[:, None]
        return pooled.reshape(len(items), -1, features.shape[-1])

    def warm_up(self) -> None:
        """One full encode, so the first client request does not pay for lazy initialisation."""
        fields = {column: "warm up" for column in self.manifest.views.columns}
        self.encode([self.prepare(fields, Image.new("RGB", (224, 224), (128, 128, 128)))])
