"""scripts/bench_scale_serve.py: which sizes its p99 target compares."""

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import typer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_scale_serve() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scale_serve", ROOT / "scripts" / "bench_scale_serve.py")
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "scripts"))  # it imports its sibling bench_serve, as when run
        spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("sizes", "reference"),
    [
        ([10_000, 100_000, 1_000_000], 100_000),  # issue 17: 10^6 against 10^5, not the smallest
        ([100_000, 1_000_000], 100_000),
        ([1_000_000], 1_000_000),
    ],
)
def test_the_p99_target_holds_the_largest_size_against_the_next_smaller(bench_scale_serve, sizes, reference) -> None:
    assert bench_scale_serve.p99_reference(sizes) == reference


def test_an_option_takes_one_value_for_every_size_or_one_per_size(bench_scale_serve) -> None:
    sizes = [100_000, 1_000_000]
    assert bench_scale_serve.per_size("HNSW32", sizes, "--index") == {100_000: "HNSW32", 1_000_000: "HNSW32"}
    assert bench_scale_serve.per_size("HNSW32;IVF4096,Flat", sizes, "--index") == {
        100_000: "HNSW32", 1_000_000: "IVF4096,Flat"}
    with pytest.raises(typer.BadParameter, match="one per size"):
        bench_scale_serve.per_size("efSearch=64;efSearch=128;efSearch=384", sizes, "--search-params")
