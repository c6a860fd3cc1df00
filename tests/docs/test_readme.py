"""The README matches the code: every setting documented, every command shown exists."""

import re
import subprocess
import sys
from pathlib import Path

from typer.main import get_command

from offline.cli import app as offline_app
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_table() -> None:
    table = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_table.py")],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert table in README, "README's configuration table is stale: paste `python scripts/settings_table.py`"
    for name in Settings.model_fields:
        assert f"`CLIPER_{name.upper()}`" in README


def test_every_cliper_variable_in_the_readme_is_a_setting() -> None:
    documented = set(re.findall(r"CLIPER_([A-Z0-9_]+)", README))
    known = {name.upper() for name in Settings.model_fields}
    assert documented <= known, f"README names settings that do not exist: {sorted(documented - known)}"


def test_every_offline_command_in_the_readme_exists() -> None:
    shown = set(re.findall(r"python -m offline ([a-z-]+)", README))
    existing = set(get_command(offline_app).commands)
    assert shown, "the README shows no offline command"
    assert shown <= existing, f"README shows commands that do not exist: {sorted(shown - existing)}"


def test_every_make_target_in_the_readme_exists() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.MULTILINE))
    shown = set(re.findall(r"(?:^|`)make ([a-z][a-z-]*)", README, flags=re.MULTILINE))
    assert {"demo", "test"} <= shown
    assert shown <= targets, f"README shows make targets that do not exist: {sorted(shown - targets)}"


def test_service_entry_point_accepts_the_readme_flags() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--bundle", "--host", "--port", "--redis-url"):
        assert flag in result.stdout
