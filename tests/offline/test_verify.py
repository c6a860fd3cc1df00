"""offline verify: a fresh bundle passes; corrupt, missing or mismatched content fails clearly."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cliper.bundle import ITEM_TOWER, USER_VECTORS, fp16_variant
from cliper.manifest import MANIFEST_FILE
from offline.cli import app
from offline.export.bundle import ExportConfig, export_bundle
from offline.export.verify import verify_bundle

CHECKS = ["files", "provenance", "tokenizer", "preprocessing", "image encoder", "text encoder", "item tower",
          "raw content", "top-50"]


@pytest.fixture(scope="module")
def bundle(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "bundle"
    export_bundle(tiny_run, out, ExportConfig())
    return out


@pytest.fixture
def copy(bundle: Path, tmp_path: Path) -> Path:
    """A copy of the bundle to damage."""
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def _failed(checks) -> dict[str, str]:
    return {check.name: check.detail for check in checks if not check.passed}


def _rehash(bundle: Path, name: str) -> None:
    """Update the manifest's sha256 of `name`, as if the file had been exported so."""
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    manifest["files"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    (bundle / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_fresh_bundle_passes_every_check(bundle: Path) -> None:
    checks = verify_bundle(bundle)
    assert [check.name for check in checks] == CHECKS
    assert _failed(checks) == {}
    details = {check.name: check.detail for check in checks}
    assert "fp16" in details["image encoder"] and "fp16" in details["item tower"]
    assert details["top-50"].startswith("32 users")


def test_command_prints_the_table(bundle: Path) -> None:
    result = CliRunner().invoke(app, ["verify", str(bundle), "--items", "6", "--users", "8"])
    assert result.exit_code == 0, result.output
    assert "| top-50 | ok |" in result.output and "passed all 9 checks" in result.output


def test_corrupted_file_fails_with_its_name(copy: Path) -> None:
    data = bytearray((copy / USER_VECTORS).read_bytes())
    data[-1] ^= 0xFF
    (copy / USER_VECTORS).write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["verify", str(copy)])
    assert result.exit_code == 1
    assert "FAILED 1 of 1 checks" in result.output
    assert f"{copy / USER_VECTORS}: sha256" in result.output and "re-export" in result.output


def test_missing_file_fails_with_its_name(copy: Path) -> None:
    (copy / "index.faiss").unlink()
    failed = _failed(verify_bundle(copy))
    assert list(failed) == ["files"] and "index.faiss: listed in the manifest but missing" in failed["files"]


def test_rehashed_wrong_vectors_fail_the_top_lists(copy: Path) -> None:
    vectors = np.load(copy / USER_VECTORS)
    np.save(copy / USER_VECTORS, vectors[::-1].copy())  # users swapped, checksum made to match
    _rehash(copy, USER_VECTORS)
    failed = _failed(verify_bundle(copy))
    assert list(failed) == ["provenance", "top-50"]
    assert "['user_vectors']" in failed["provenance"] and "max score gap" in failed["top-50"]


def test_rehashed_wrong_item_tower_fails_the_tower_checks(copy: Path) -> None:
    shutil.copy(copy / fp16_variant(ITEM_TOWER), copy / ITEM_TOWER)  # an fp16 tower is not fp32-exact
    _rehash(copy, ITEM_TOWER)
    failed = _failed(verify_bundle(copy))
    assert set(failed) == {"item tower", "raw content"}


def test_missing_run_asks_for_it(copy: Path, tmp_path: Path) -> None:
    failed = _failed(verify_bundle(copy, run_dir=tmp_path / "nowhere"))
    assert list(failed) == ["run"] and "pass --run RUN" in failed["run"]
