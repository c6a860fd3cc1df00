"""ONNX graphs of the CLIP image and text encoders and of the item tower, in fp32, fp16 and int8.

Each graph has a dynamic batch axis. The text encoder takes ids padded to the context length
(as `cliper.tokenizer` makes them); a Hugging Face text tower, which masks its padding, also
has a dynamic sequence axis, so trailing padding columns may be trimmed
(`cliper.tokenizer.trim_padding`) with no change to the features. CLIP's own text tower adds
a fixed positional table and needs the full context length. Export goes through the TorchScript
exporter (`dynamo=False`), which traces open_clip and Hugging Face towers reliably; the trace
is checked against torch by `offline verify`. The fp16 variants (for the CUDA provider) and the
int8 variants of the encoders (for CPU) keep float32 inputs and outputs, so a caller feeds every
variant the same arrays.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel
from torch import Tensor, nn

from offline.clip.model import ClipHandle
from offline.models import Recommender
from offline.models.content import ContentRecommender

OPSET = 17


@dataclass(frozen=True)
class GraphSpec:
    """The input and output names of one exported graph, outputs in order (see docs/architecture.md)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


IMAGE_GRAPH = GraphSpec(("pixel_values",), ("image_features",))
TEXT_GRAPH = GraphSpec(("input_ids",), ("text_features",))
TOWER_GRAPH = GraphSpec(("image_features", "text_view_features"), ("item_vectors", "view_weights"))


class ImageEncoder(nn.Module):
    """`pixel_values (B, 3, S, S)` -> raw (unnormalised) CLIP image features `(B, Di)`."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.clip.encode_image(pixel_values)


class TextEncoder(nn.Module):
    """`input_ids (B, L)` -> raw CLIP text features `(B, Dt)`; masks come from the pad ids."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.clip.encode_text(input_ids)


class ItemTower(nn.Module):
    """`(image (B, Di), text views (B, V, Dt))` -> `(item vectors (B, K), view weights (B, V))`:
    the backbone's content-only path, CLIPER fusion included, and each view's weight in it."""

    def __init__(self, model: Recommender):
        super().__init__()
        if not isinstance(model, ContentRecommender):
            raise ValueError(
                f"{model.name} is an ID-only backbone: it cannot embed a new item from its content, "
                "so it has no item tower to export; train a multi-modal backbone (vbpr, freedom, bm3)"
            )
        self.model = model

    def forward(self, image_features: Tensor, text_view_features: Tensor) -> tuple[Tensor, Tensor]:
        return (self.model.content_item_vectors(image_features, text_view_features),
                self.model.content_view_weights(image_features, text_view_features))


def export_graph(
    module: nn.Module,
    spec: GraphSpec,
    example: tuple[Tensor, ...],
    path: Path,
    dynamic: dict[str, dict[int, str]] | None = None,
) -> Path:
    """Trace `module` on `example` (CPU tensors) into an ONNX file at `path`; axis 0 of every
    input and output is dynamic, and so are the axes named in `dynamic`.

    The module is put in eval mode (the exporter restores a wrapper's original mode afterwards,
    which for a fresh wrapper would switch dropout back on). The example should look like real
    inputs: a Hugging Face tower is traced with padding, so the mask logic stays in the graph.
    """
    module = module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {name: {0: "batch", **(dynamic or {}).get(name, {})} for name in (*spec.inputs, *spec.outputs)}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # its fused attention op has no ONNX export
    try:
        _trace(module, spec, example, path, axes)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    onnx.checker.check_model(str(path))
    return path


def _trace(module: nn.Module, spec: GraphSpec, example: tuple[Tensor, ...], path: Path, axes: dict) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter is deprecated but still the robust one for these models. The
        # Python branches the tracer warns about test shapes only (padding length, query length
        # > 1) and come out the same for every batch size and sequence length; the tests and
        # `offline verify` compare the graphs with torch.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)  # its logging setup
        # Gather indices here are token positions, argmax and top-k results: never negative.
        warnings.filterwarnings("ignore", "Exporting aten::index operator of advanced indexing")
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=list(spec.inputs),
            output_names=list(spec.outputs),
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def export_clip_encoders(clip: ClipHandle, image_path: Path, text_path: Path) -> None:
    """The image and text encoders of a loaded CLIP, on CPU."""
    model = clip.model.to("cpu").float()
    size = clip.preprocess_config.image_size
    pixels = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, size, size), dtype=np.float32))
    export_graph(ImageEncoder(model), IMAGE_GRAPH, (pixels,), image_path)
    ids = clip.tokenize(["a photo of a red mug", "x"])  # padded, as the service's ids are
    sequence = {"input_ids": {1: "sequence"}} if clip.hf_text is not None else None
    export_graph(TextEncoder(model), TEXT_GRAPH, (ids,), text_path, sequence)


def export_item_tower(model: Recommender, path: Path) -> Path:
    """The content-only path of a trained multi-modal backbone, traced on its own features."""
    tower = ItemTower(model.to("cpu").float())
    example = (model.image_features[:2].clone(), model.text_view_features[:2].clone())
    return export_graph(tower, TOWER_GRAPH, example, path)


def convert_to_fp16(source: Path, target: Path) -> Path:
    """An fp16 copy of an fp32 graph with float32 inputs and outputs, for GPU serving."""
    converted = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    ordered = OnnxModel(converted)
    ordered.topological_sort()  # the converter appends its input casts after their users
    onnx.save(ordered.model, str(target))
    onnx.checker.check_model(str(target))
    return target


def quantize_to_int8(source: Path, target: Path) -> Path:
    """An int8 copy of an fp32 encoder for CPU serving: ONNX Runtime's dynamic quantization of the
    weight matrix products (MatMul with a constant weight, Gemm), activations quantized per call.

    Weights are signed 7-bit (`reduce_range`): without AVX-512 VNNI, ONNX Runtime's u8 x s8
    kernel sums byte pairs into saturating int16, which full 8-bit weights overflow (mean cosine
    to fp32 0.993 on a ViT-B-32's poster embeddings, 0.9996 with 7 bits). Convolutions (a ViT's
    patch embedding, about 3% of its multiply-adds) stay fp32.
    """
    quantize_dynamic(
        source, target, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8, reduce_range=True
    )
    onnx.checker.check_model(str(target))
    return target


def cpu_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """An ONNX Runtime CPU session (0 threads = ONNX Runtime's default).

    fp16 graphs get the "extended" optimisation level: ONNX Runtime 1.31's CPU layout
    optimiser (NchwcTransformer, on at the "all" level) crashes the process on them.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if is_fp16(path):
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def is_fp16(path: Path) -> bool:
    """Whether a graph holds fp16 weights (an output of `convert_to_fp16`)."""
    model = onnx.load(str(path), load_external_data=False)
    return any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
