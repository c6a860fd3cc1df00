"""scripts/gpu_check.py, the GPU check's decisions, on this machine without a GPU: the real service
(ONNX Runtime and FAISS on the CPU here) must fail it on both counts, and the check's dry run
(`--no-require-gpu`) must run end to end. The one stand-in is a healthy GPU answer of
/health/ready, made from the real answer's shape, since no GPU exists here."""

import copy
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "service"))  # the service tests' helpers
from bundle_factory import build_bundle  # noqa: E402
from served import served  # noqa: E402


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load("gpu_check")
SCRIPT = str(ROOT / "scripts" / "gpu_check.py")


@pytest.fixture(scope="module")
def cpu_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real service on this CPU machine, told to prefer the CUDA provider as the check does."""
    folder = tmp_path_factory.mktemp("gpu-check")
    build_bundle(folder / "bundle")
    with served(folder / "bundle", folder / "data", env={"CLIPER_PROVIDERS": gpu_check.PROVIDERS}) as server:
        yield server.base


@pytest.fixture(scope="module")
def cpu_answer(cpu_base: str) -> dict[str, Any]:
    return gpu_check.ready_bodies(cpu_base, 1)[0]


def gpu_answer(cpu_answer: dict[str, Any]) -> dict[str, Any]:
    """The stand-in: the real answer, with what a service on a GPU says instead."""
    body = copy.deepcopy(cpu_answer)
    body["checks"].update(encoders="warm on CUDAExecutionProvider", index="FAISS on GPU")
    return body


def test_the_real_cpu_service_fails_on_both_counts(cpu_base: str) -> None:
    bodies = gpu_check.ready_bodies(cpu_base, 3)
    assert all(body["checks"]["encoders"] == "warm on CPUExecutionProvider" for body in bodies)
    with pytest.raises(gpu_check.GpuNotInUse) as failure:
        gpu_check.assert_gpu_in_use(bodies)
    problems = failure.value.problems
    assert len(problems) == 2  # the same two from every answer, listed once
    assert problems[0].startswith("ONNX Runtime is on the CPU") and "'warm on CPUExecutionProvider'" in problems[0]
    assert problems[1].startswith("FAISS is on the CPU") and "'FAISS on CPU'" in problems[1]


def test_assert_ready_exits_1_and_says_both(cpu_base: str) -> None:
    result = subprocess.run([sys.executable, SCRIPT, "assert-ready", cpu_base, "--polls", "2"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "GPU CHECK FAILED" in result.stderr
    assert "ONNX Runtime is on the CPU" in result.stderr and "FAISS is on the CPU" in result.stderr


def test_a_gpu_answer_passes(cpu_answer: dict[str, Any]) -> None:
    assert gpu_check.ready_problems(gpu_answer(cpu_answer)) == []
    gpu_check.assert_gpu_in_use([gpu_answer(cpu_answer)] * 3)


@pytest.mark.parametrize(("check", "cpu_value", "problem"), [
    ("encoders", "warm on CPUExecutionProvider", "ONNX Runtime is on the CPU"),
    ("index", "FAISS on CPU", "FAISS is on the CPU"),
])
def test_each_fallback_fails_on_its_own(cpu_answer: dict[str, Any], check: str, cpu_value: str, problem: str) -> None:
    body = gpu_answer(cpu_answer)
    body["checks"][check] = cpu_value
    problems = gpu_check.ready_problems(body)
    assert len(problems) == 1 and problems[0].startswith(problem)
    with pytest.raises(gpu_check.GpuNotInUse):
        gpu_check.assert_gpu_in_use([gpu_answer(cpu_answer), body])  # one worker of several fell back


def test_answers_that_do_not_say_fail(cpu_answer: dict[str, Any]) -> None:
    assert len(gpu_check.ready_problems({})) == 3  # not ready, and neither place known
    older = gpu_answer(cpu_answer)
    del older["checks"]["index"]  # a service from before readiness said where FAISS searches
    assert [p.split(":")[0] for p in gpu_check.ready_problems(older)] == ["FAISS is on the CPU"]
    starting = {**gpu_answer(cpu_answer), "status": "not ready"}
    assert gpu_check.ready_problems(starting)[0].startswith("the service is not ready")
    tensorrt = gpu_answer(cpu_answer)
    tensorrt["checks"]["encoders"] = "warm on TensorrtExecutionProvider"  # not the provider the check asks for
    assert len(gpu_check.ready_problems(tensorrt)) == 1


def test_preflight_here_finds_neither_on_the_gpu() -> None:
    """The real ONNX Runtime and FAISS of this machine: CPU builds."""
    report = gpu_check.preflight()
    assert len(report.problems) == 2, report
    assert "has no CUDAExecutionProvider" in report.problems[0]
    assert report.problems[1].startswith("FAISS sees no GPU") and "CPU build" in report.problems[1]


def test_run_fails_loudly_before_building_anything(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, SCRIPT, "run", "--sizes", "1000", "--out", str(tmp_path / "out"),
                             "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "GPU CHECK FAILED" in result.stderr and "has no CUDAExecutionProvider" in result.stderr
    assert "FAISS sees no GPU" in result.stderr
    assert list((tmp_path / "work").iterdir()) == []  # no bundle built: the failure costs no device time


def test_dry_run_prints_one_table(tmp_path: Path) -> None:
    """The whole check on the CPU (`--no-require-gpu`): bundle, service, benchmarks, table, logs."""
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, SCRIPT, "run", "--no-require-gpu", "--sizes", "2000", "--users", "400", "--workers", "1",
         "--seconds", "0.5", "--ingest", "8", "--batch", "4", "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in (out / "gpu-check.md").read_text().splitlines() if line.startswith("|")]
    assert len(lines) == 3 and len({line.count("|") for line in lines}) == 1  # header, rule, one row
    assert lines[2].startswith("| 2,000 |") and "| warm on CPUExecutionProvider | FAISS on CPU |" in lines[2]
    assert lines[2] in result.stdout
    assert "FAISS is on the CPU" not in result.stderr  # the dry run reports, it does not fail
    assert (out / "service-2000.log").is_file() and (out / "gpu-check.json").is_file()
