"""The GPU check's wheels on their way to the device: scripts/gpu_wheels.sh packs them into parts,
scripts/gpu_check.sh receives the parts one call at a time and rebuilds the wheels byte for byte
(small files stand in for the 600 MiB of real wheels); scripts/gpu_wheels.py refuses a set that
would fail there. Both shell scripts pass bash -n and shellcheck."""

import hashlib
import importlib.util
import math
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_ensure_scripts import shellcheck

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
PART = 1000  # bytes per part, instead of 55 MiB
SIZES = {"tiny-1.0-py3-none-any.whl": 1, "under-1.0-py3-none-any.whl": 999, "exact-1.0-py3-none-any.whl": 1000,
         "over-1.0-py3-none-any.whl": 1001, "big-1.0-py3-none-any.whl": 2500, "bigger-1.0-py3-none-any.whl": 3999}

spec = importlib.util.spec_from_file_location("gpu_wheels", SCRIPTS / "gpu_wheels.py")
gpu_wheels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_wheels)


def run(*args: str, store: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPU_PART_BYTES": str(PART), **({"GPU_CHECK_STORE": str(store)} if store else {})}
    return subprocess.run(["bash", *args], capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    """Random bytes under wheel names, sizes around the part size."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    rng = random.Random(7)
    for name, size in SIZES.items():
        (folder / name).write_bytes(rng.randbytes(size))
    return folder


def pack(wheels: Path, out: Path) -> list[Path]:
    result = run(str(SCRIPTS / "gpu_wheels.sh"), "pack", str(wheels), str(out))
    assert result.returncode == 0, result.stderr
    return sorted(out.glob("part-*"))


def receive(part: Path, store: Path) -> subprocess.CompletedProcess[str]:
    return run(str(SCRIPTS / "gpu_check.sh"), "receive", str(part), store=store)


def test_parts_round_trip_byte_for_byte(wheels: Path, tmp_path: Path) -> None:
    parts = pack(wheels, tmp_path / "out")
    assert len(parts) == math.ceil(sum(SIZES.values()) / PART)  # no part more than needed here
    for part in parts:
        assert sum(piece.stat().st_size for piece in part.glob("*.piece-*")) <= PART
    store = tmp_path / "store"
    for part in random.Random(3).sample(parts, len(parts)):  # any order
        result = receive(part, store)
        assert result.returncode == 0, result.stderr
    assert f"{len(parts)} of {len(parts)} parts here" in result.stdout
    result = run(str(SCRIPTS / "gpu_check.sh"), "assemble", str(tmp_path / "rebuilt"), store=store)
    assert result.returncode == 0, result.stderr
    for name in SIZES:
        assert (tmp_path / "rebuilt" / name).read_bytes() == (wheels / name).read_bytes(), name


def test_a_damaged_part_is_refused_as_it_lands(wheels: Path, tmp_path: Path) -> None:
    part = pack(wheels, tmp_path / "out")[0]
    piece = next(part.glob("*.piece-*"))
    data = bytearray(piece.read_bytes())
    data[len(data) // 2] ^= 1
    piece.write_bytes(bytes(data))
    result = receive(part, tmp_path / "store")
    assert result.returncode == 1 and f"{part.name} arrived damaged" in result.stderr


def test_the_missing_parts_are_named(wheels: Path, tmp_path: Path) -> None:
    parts = pack(wheels, tmp_path / "out")
    store = tmp_path / "store"
    received = [receive(part, store) for part in parts[2:]]
    assert all(result.returncode == 0 for result in received)
    assert "parts before part-03 are missing" in received[0].stderr  # as after a machine given back in between
    last = received[-1].stdout.strip()
    assert last.endswith(f"{len(parts) - 2} of {len(parts)} parts here; missing: part-01 part-02")
    result = run(str(SCRIPTS / "gpu_check.sh"), "assemble", str(tmp_path / "rebuilt"), store=store)
    assert result.returncode == 1 and f"parts missing in {store}: part-01 part-02;" in result.stderr


def test_parts_of_two_packings_do_not_mix(wheels: Path, tmp_path: Path) -> None:
    first = pack(wheels, tmp_path / "first")
    (wheels / "tiny-1.0-py3-none-any.whl").write_bytes(b"another")
    second = pack(wheels, tmp_path / "second")
    store = tmp_path / "store"
    assert receive(first[0], store).returncode == 0
    result = receive(second[1], store)
    assert result.returncode == 1 and "another gpu_wheels.sh run" in result.stderr


def test_a_rebuilt_wheel_must_match_its_sha256(wheels: Path, tmp_path: Path) -> None:
    """Pieces that each check out but do not make the wheel (here: a piece swapped for another's)."""
    parts = pack(wheels, tmp_path / "out")
    a, b = sorted(parts[0].glob("*.piece-*"))[0], sorted(parts[1].glob("*.piece-*"))[0]
    swapped = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(swapped)
    for part in parts[:2]:
        listed = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                         for p in sorted(part.glob("*.piece-*")))
        (part / "PIECES.sha256").write_text(listed)
    store = tmp_path / "store"
    for part in parts:
        assert receive(part, store).returncode == 0
    result = run(str(SCRIPTS / "gpu_check.sh"), "assemble", str(tmp_path / "rebuilt"), store=store)
    assert result.returncode == 1 and "does not match its sha256" in result.stderr


@pytest.mark.parametrize("name", ["gpu_wheels.sh", "gpu_check.sh"])
def test_the_scripts_parse_and_pass_shellcheck(name: str) -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPTS / name)], check=False).returncode == 0
    result = subprocess.run([shellcheck(), str(SCRIPTS / name)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def make_wheel(folder: Path, filename: str, requires: list[str], files: dict[str, bytes] | None = None) -> Path:
    """A minimal wheel: METADATA with `requires`, WHEEL, RECORD and `files`."""
    name, version = filename.split("-")[:2]
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": b"", **(files or {})}
    metadata = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
        name, version, "".join(f"Requires-Dist: {req}\n" for req in requires))
    record = "".join(f"{path},,\n" for path in [*files, f"{info}/METADATA", f"{info}/WHEEL"]) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(folder / filename, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{info}/METADATA", metadata)
        archive.writestr(f"{info}/WHEEL",
                         "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", record)
    return folder / filename


def test_verify_passes_a_closed_set(tmp_path: Path) -> None:
    make_wheel(tmp_path, "alpha-1.0-py3-none-any.whl", ["beta>=1", "numpy", "gamma; python_version < '3.10'",
                                                        "delta; extra == 'speed'", "epsilon; sys_platform == 'win32'"])
    make_wheel(tmp_path, "beta-1.0-cp312-cp312-manylinux_2_28_x86_64.whl", [])
    lines = gpu_wheels.verify(tmp_path)
    assert lines[0].endswith("needs beta, numpy")  # gamma, delta and epsilon do not apply on the device


@pytest.mark.parametrize(("filename", "requires", "complaint"), [
    ("alpha-1.0-py3-none-any.whl", ["nowhere-to-be-found"], "needs nowhere-to-be-found"),
    ("alpha-2.0-py3-none-any.whl", [], "alpha comes twice"),
    ("beta-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", [], "does not install on CPython 3.12"),
    ("beta-1.0-cp312-cp312-macosx_11_0_arm64.whl", [], "does not install on CPython 3.12"),
    ("beta-1.0-cp312-cp312-manylinux_2_40_x86_64.whl", [], "does not install on CPython 3.12"),
])
def test_verify_refuses_a_set_that_would_fail(tmp_path: Path, filename: str, requires: list[str],
                                              complaint: str) -> None:
    make_wheel(tmp_path, "alpha-1.0-py3-none-any.whl", [])
    make_wheel(tmp_path, filename, requires)
    with pytest.raises(gpu_wheels.WheelSetError, match=complaint):
        gpu_wheels.verify(tmp_path)


def test_verify_refuses_a_corrupt_wheel(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "alpha-1.0-py3-none-any.whl", [], {"alpha/data.txt": b"x" * 1000})
    data = bytearray(wheel.read_bytes())
    offset = data.index(b"x" * 1000)
    data[offset] = ord("y")  # stored uncompressed: the CRC no longer matches
    wheel.write_bytes(bytes(data))
    with pytest.raises(gpu_wheels.WheelSetError, match="is corrupt"):
        gpu_wheels.verify(tmp_path)


def test_the_weightless_wheel_installs_without_the_weights(tmp_path: Path) -> None:
    files = {"mini/model/model.safetensors": b"w" * 5000, "mini/model/tokenizer.json": b'{"t": 1}',
             "mini/model/config.json": b'{"c": 2}'}
    source = make_wheel(tmp_path, "mini-0.1.0-py3-none-any.whl", [], files)
    (tmp_path / "out").mkdir()
    slim = gpu_wheels.weightless(source, tmp_path / "out")
    assert slim.name == "mini-0.1.0-0weightless-py3-none-any.whl"
    with zipfile.ZipFile(slim) as archive:
        assert "mini/model/model.safetensors" not in archive.namelist()
        assert b"model.safetensors" not in archive.read("mini-0.1.0.dist-info/RECORD")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target",
                    str(target), str(slim)], check=True, capture_output=True)
    for path, data in files.items():
        installed = target / path
        assert (installed.read_bytes() == data) if not path.endswith("safetensors") else not installed.exists()
