"""offline verify: a fresh bundle passes; corrupt, missing or mismatched content fails clearly."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cliper.bundle import CLIP_TEXT, ITEM_FIELDS, ITEM_TOWER, USER_VECTORS, VIEW_WEIGHTS, fp16_variant, read_bundle
from cliper.manifest import MANIFEST_FILE
from cliper.thumbnails import THUMBNAIL_OFFSETS, THUMBNAILS, write_thumbnails
from offline.cli import app
from offline.export.bundle import ExportConfig, export_bundle
from offline.export.verify import cold_rows_check, verify_bundle

CHECKS = ["files", "provenance", "tokenizer", "preprocessing", "image encoder", "text encoder", "item tower",
          "raw content", "item encodings", "item fields", "top-50"]


@pytest.fixture(scope="module")
def bundle(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "bundle"
    export_bundle(tiny_run, out, ExportConfig(fp16=True))
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
    assert "view_weights" in details["item tower"] and "CLIP text" in details["item encodings"]
    assert details["item fields"].startswith("16 of 16 items' fields are the catalog's; 16 thumbnails right")
    assert details["top-50"].startswith("32 users")


def test_command_prints_the_table(bundle: Path) -> None:
    result = CliRunner().invoke(app, ["verify", str(bundle), "--items", "6", "--users", "8"])
    assert result.exit_code == 0, result.output
    assert "| top-50 | ok |" in result.output and "passed all 11 checks" in result.output


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
    # its view weights may or may not stray past the tolerance in the stored encodings' check
    assert {"item tower", "raw content"} <= set(failed) <= {"item tower", "raw content", "item encodings"}


def test_missing_run_asks_for_it(copy: Path, tmp_path: Path) -> None:
    failed = _failed(verify_bundle(copy, run_dir=tmp_path / "nowhere"))
    assert list(failed) == ["run"] and "pass --run RUN" in failed["run"]


@pytest.mark.parametrize("name", [VIEW_WEIGHTS, CLIP_TEXT])
def test_rehashed_wrong_item_encodings_fail_their_check(copy: Path, name: str) -> None:
    """Rows rolled by one: every item gets its neighbour's view weights or fused text."""
    np.save(copy / name, np.roll(np.load(copy / name), 1, axis=0))
    _rehash(copy, name)
    failed = _failed(verify_bundle(copy))
    assert list(failed) == ["item encodings"]


def test_rehashed_wrong_fields_and_thumbnails_fail_the_item_fields(copy: Path) -> None:
    bundle = read_bundle(copy)
    fields = json.loads((copy / ITEM_FIELDS).read_text())
    (copy / ITEM_FIELDS).write_text(json.dumps(fields[1:] + fields[:1]))
    jpegs = [bundle.thumbnails.get(row) for row in range(len(bundle.item_ids))]
    write_thumbnails(copy, jpegs[-1:] + jpegs[:-1])
    for name in (ITEM_FIELDS, THUMBNAILS, THUMBNAIL_OFFSETS):
        _rehash(copy, name)
    failed = _failed(verify_bundle(copy))
    assert list(failed) == ["item fields"]
    assert "wrong fields: [" in failed["item fields"] and "wrong thumbnails: [" in failed["item fields"]


def test_a_bundle_without_thumbnails_passes(tiny_run: Path, tmp_path: Path) -> None:
    export_bundle(tiny_run, tmp_path / "bundle", ExportConfig(fp16=False, thumbnails=False))
    checks = verify_bundle(tmp_path / "bundle", items=6, users=8)
    assert _failed(checks) == {}
    assert "no thumbnails (exported without)" in {check.name: check.detail for check in checks}["item fields"]


@pytest.mark.parametrize(
    ("gaps", "exact", "passed"),
    [
        ([0.0, 0.0], True, True),
        ([0.0, 0.0, 2e-4], True, False),  # one stored cold row off: a wrong bundle
        ([0.0, 0.0, 1.0], False, True),  # approximate neighbours: some rows may differ
        ([0.0, 1.0, 1.0], False, False),  # but most must not
        ([], False, True),
    ],
)
def test_stored_cold_rows_must_equal_the_towers_unless_their_neighbours_were_approximate(gaps, exact, passed) -> None:
    detail, ok = cold_rows_check(np.array(gaps), tolerance=1e-4, exact=exact)
    assert ok is passed
    if gaps and not exact:
        assert detail.startswith(f"{sum(gap <= 1e-4 for gap in gaps)} of {len(gaps)} equal")
