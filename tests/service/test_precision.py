"""Which bundle file serves each graph (CLIPER_PRECISION): fp16 twins only on the CUDA provider,
int8 twins of the encoders on CPU, and a clear error where an explicit choice cannot be met.
The service end to end with int8 graphs: tests/offline/test_clip_checkpoint_path.py."""

import pytest
from pydantic import ValidationError

from cliper.bundle import IMAGE_ENCODER, ITEM_TOWER, TEXT_ENCODER, BundleError
from service.config import Settings
from service.encoders import graph_file

GRAPHS = (IMAGE_ENCODER, TEXT_ENCODER, ITEM_TOWER)
FP32 = {"image_encoder.onnx", "text_encoder.onnx", "item_tower.onnx", "user_vectors.npy"}
FP16 = {"image_encoder.fp16.onnx", "text_encoder.fp16.onnx", "item_tower.fp16.onnx"}
INT8 = {"image_encoder.int8.onnx", "text_encoder.int8.onnx"}


def _chosen(precision: str, on_cuda: bool, files: set[str]) -> list[str]:
    return [graph_file(graph, precision, on_cuda, files) for graph in GRAPHS]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("precision", "on_cuda", "files", "expected"),
    [
        ("auto", True, FP32 | FP16 | INT8, ["image_encoder.fp16.onnx", "text_encoder.fp16.onnx", "item_tower.fp16.onnx"]),
        ("auto", False, FP32 | FP16 | INT8, ["image_encoder.int8.onnx", "text_encoder.int8.onnx", "item_tower.onnx"]),
        ("auto", False, FP32 | FP16, ["image_encoder.onnx", "text_encoder.onnx", "item_tower.onnx"]),  # no fp16 on CPU
        ("auto", True, FP32 | INT8, ["image_encoder.onnx", "text_encoder.onnx", "item_tower.onnx"]),
        ("auto", False, FP32, ["image_encoder.onnx", "text_encoder.onnx", "item_tower.onnx"]),
        ("fp32", True, FP32 | FP16 | INT8, ["image_encoder.onnx", "text_encoder.onnx", "item_tower.onnx"]),
        ("fp32", False, FP32 | FP16 | INT8, ["image_encoder.onnx", "text_encoder.onnx", "item_tower.onnx"]),
        ("fp16", True, FP32 | FP16, ["image_encoder.fp16.onnx", "text_encoder.fp16.onnx", "item_tower.fp16.onnx"]),
        ("int8", False, FP32 | INT8, ["image_encoder.int8.onnx", "text_encoder.int8.onnx", "item_tower.onnx"]),
        ("int8", True, FP32 | FP16 | INT8, ["image_encoder.int8.onnx", "text_encoder.int8.onnx", "item_tower.onnx"]),
    ],
)
def test_graph_file_per_precision_and_provider(precision: str, on_cuda: bool, files: set[str], expected: list[str]) -> None:
    assert _chosen(precision, on_cuda, files) == expected


@pytest.mark.parametrize(
    ("precision", "on_cuda", "files", "message"),
    [
        ("fp16", False, FP32 | FP16, "fp16 needs the CUDA provider"),
        ("fp16", True, FP32 | INT8, r"no image_encoder\.fp16\.onnx; export it with --fp16"),
        ("int8", False, FP32 | FP16, r"no image_encoder\.int8\.onnx; export it with --int8"),
    ],
)
def test_an_explicit_precision_that_cannot_be_served_is_an_error(
    precision: str, on_cuda: bool, files: set[str], message: str
) -> None:
    with pytest.raises(BundleError, match=message):
        _chosen(precision, on_cuda, files)


def test_precision_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(bundle="b").precision == "auto"
    monkeypatch.setenv("CLIPER_PRECISION", "int8")
    assert Settings(bundle="b").precision == "int8"
    monkeypatch.setenv("CLIPER_PRECISION", "int4")
    with pytest.raises(ValidationError, match="precision"):
        Settings(bundle="b")
