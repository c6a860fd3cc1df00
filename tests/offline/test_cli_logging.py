"""`python -m offline` shows its modules' progress logs on stderr (INFO by default)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("level", "shown"), [(None, True), ("WARNING", False)])
def test_export_shows_the_index_recall_unless_asked_for_less(tiny_run: Path, tmp_path: Path, level, shown) -> None:
    args = [] if level is None else ["--log-level", level]
    done = subprocess.run(
        [sys.executable, "-m", "offline", *args, "export", "--run", str(tiny_run), "--out", str(tmp_path / "bundle"),
         "--index-factory", "IVF4,Flat", "--search-params", "nprobe=2", "--no-thumbnails"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert ("INFO cliper.bundle: index 'IVF4,Flat' (nprobe=2): recall@50 vs exact search" in done.stderr) is shown
