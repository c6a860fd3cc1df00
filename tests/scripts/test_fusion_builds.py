"""scripts/fusion_builds.py: builds side by side, the spread between builds, issue 18's checks."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stats(mean: float, std: float) -> dict[str, float]:
    return {"mean": mean, "std": std}


def row(label: str, warm: tuple[float, float], new: tuple[float, float]) -> dict:
    return {"model": "freedom", "label": label, "test.recall@20": stats(*warm), "test.ndcg@20": stats(*warm),
            "cold.all.recall@20": stats(*new), "cold.cold_only.recall@20": stats(*new)}


def write_build(folder: Path, warm: dict[str, tuple[float, float]], new: dict[str, tuple[float, float]]) -> Path:
    folder.mkdir()
    runs = [{"model": "freedom", "label": "validated", "seed": 0, "chosen": {"mode": "attention", "tau": 1.0, "alpha": 0.5}},
            {"model": "freedom", "label": "validated", "seed": 1, "chosen": {"mode": "mean", "tau": None, "alpha": None}}]
    report = {"rows": [row(label, warm[label], new[label]) for label in warm], "runs": runs}
    (folder / "bench.json").write_text(json.dumps(report), encoding="utf-8")
    return folder / "bench.json"


def test_tables_the_builds_their_spread_and_the_checks(tmp_path: Path) -> None:
    first = write_build(
        tmp_path / "clip0",
        {"grid mean": (0.300, 0.002), "attention": (0.296, 0.003), "validated": (0.301, 0.002)},
        {"grid mean": (0.29, 0.01), "attention": (0.31, 0.01), "validated": (0.30, 0.01)},
    )
    second = write_build(  # validated 0.010 under the mean, both stds 0.004: below by more than one std
        tmp_path / "clip1",
        {"grid mean": (0.310, 0.004), "attention": (0.304, 0.003), "validated": (0.300, 0.004)},
        {"grid mean": (0.28, 0.01), "attention": (0.33, 0.01), "validated": (0.29, 0.01)},
    )
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "fusion_builds.py"), str(first), str(second)],
                            capture_output=True, text=True, timeout=120, check=True)
    out = result.stdout
    assert "| clip0 | validated | 0.3010 ± 0.0020 |" in out
    # over builds: the builds' means averaged, their std the spread between builds
    assert "| **over 2 builds** | grid mean | 0.3050 ± 0.0071 |" in out
    assert "- clip0: attention t=1 a=0.5; mean" in out
    assert "clip0, warm R@20: validated - mean = +0.0010 (std 0.0020): within one std or above" in out
    assert "clip1, warm R@20: validated - mean = -0.0100 (std 0.0040): BELOW by more than one std" in out
    assert "over builds, warm R@20: validated 0.3005 against plain attention 0.3000: at least as good" in out
    assert "over builds, new items R@20 (new only): validated 0.2950 against plain attention 0.3200: BELOW" in out
