"""scripts/bench_scale.py: the parts that read other programs' output, and the world sizes."""

import importlib.util
import logging
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from cliper.bundle import ADD_ROWS, build_index
from offline.data.scale import ScaleConfig
from offline.export.verify import Check, report

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_scale() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "scripts" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_world_of_n_items_has_amazon_clothings_proportions(bench_scale) -> None:
    base = ScaleConfig()
    assert bench_scale.amazon_shape(base.items) == {"items": 23_033, "users": 39_387, "interactions": 278_677}
    assert bench_scale.amazon_shape(1_000_000) == {"items": 1_000_000, "users": 1_710_025, "interactions": 12_099_032}


def test_verify_rows_are_read_from_verifys_own_report(bench_scale) -> None:
    checks = [Check("files", True, "20 files | match"), Check("raw content", False, "image 1.0e+00"),
              Check("top-50", True, "32 users")]
    rows = bench_scale.VERIFY_ROW.findall(report(checks))
    assert rows == [("files", "ok"), ("raw content", "FAILED"), ("top-50", "ok")]


def test_index_build_seconds_are_read_from_build_index_log(bench_scale, caplog) -> None:
    vectors = np.random.default_rng(0).standard_normal((ADD_ROWS + 10, 4)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="cliper.bundle"):
        build_index(vectors, "Flat")
    progress = bench_scale.INDEX_PROGRESS.findall(caplog.text)
    assert [(stop, total) for stop, total, _ in progress] == [(str(ADD_ROWS), str(len(vectors))),
                                                             (str(len(vectors)), str(len(vectors)))]
