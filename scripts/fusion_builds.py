"""View fusions across CLIP training runs (issue 18): one `python -m offline bench` report per
build (a CLIP training run and its features), each with several training seeds, side by side.

    .venv/bin/python scripts/fusion_builds.py runs/bench/lies_c0/bench.json runs/bench/lies_c1/bench.json ...

Per build, each fusion's mean ± std over the training seeds; then over builds, the mean of the
builds' means ± their std (the variance between CLIP training runs, shown and not hidden); then
the checks of issue 18: on every build, the validated choice within one standard deviation of
the mean of views (the larger of the two rows' stds), and over builds the validated choice
against plain attention, warm and for new items. The fusions are `bench` labels: a `validated`
run records every cell of its grid (`grid mean`, `grid attention_calibrated t=1 a=1`, ...).
"""

import json
import statistics
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from offline.train.fusion_grid import label  # noqa: E402

DEFAULT_FUSIONS = ["global", "grid mean", "attention", "grid attention_calibrated t=1 a=1", "validated"]
METRICS = [  # (bench row key, column title)
    ("test.recall@20", "warm R@20"),
    ("test.ndcg@20", "warm NDCG@20"),
    ("cold.all.recall@20", "new items R@20 (all)"),
    ("cold.cold_only.recall@20", "new items R@20 (new only)"),
]
WARM, NEW = METRICS[0][0], METRICS[3][0]
MEAN, VALIDATED, PLAIN = "grid mean", "validated", "attention"

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def build_rows(report: dict[str, Any], model: str) -> dict[str, dict[str, Any]]:
    """The bench report's summary rows of `model`, by label."""
    return {row["label"]: row for row in report["rows"] if row["model"] == model}


def cell(stats: dict[str, float] | None) -> str:
    return "–" if stats is None else f"{stats['mean']:.4f} ± {stats['std']:.4f}"


def over_builds(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def chosen(report: dict[str, Any], model: str) -> str:
    """What validation chose for each seed, e.g. `attention t=1 a=1; mean; ...`."""
    return "; ".join(label(run["chosen"]) for run in report["runs"] if run["label"] == VALIDATED and run["model"] == model)


def table(names: list[str], builds: list[dict[str, dict[str, Any]]], fusions: list[str]) -> list[str]:
    header = ["build", "fusion"] + [title for _, title in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, rows in zip(names, builds):
        for fusion in fusions:
            if fusion in rows:
                lines.append(f"| {name} | {fusion} | " + " | ".join(cell(rows[fusion][key]) for key, _ in METRICS) + " |")
    for fusion in fusions:
        present = [rows[fusion] for rows in builds if fusion in rows]
        if len(present) == len(builds) > 1:
            cells = [cell(over_builds([row[key]["mean"] for row in present])) if all(row[key] for row in present)
                     else "–" for key, _ in METRICS]
            lines.append(f"| **over {len(builds)} builds** | {fusion} | " + " | ".join(cells) + " |")
    return lines


def checks(names: list[str], builds: list[dict[str, dict[str, Any]]]) -> list[str]:
    lines = []
    for key, title in METRICS[:1] + METRICS[2:]:
        for name, rows in zip(names, builds):
            if MEAN not in rows or VALIDATED not in rows or rows[MEAN][key] is None:
                continue
            validated, mean = rows[VALIDATED][key], rows[MEAN][key]
            gap, std = validated["mean"] - mean["mean"], max(validated["std"], mean["std"])
            verdict = "within one std or above" if gap >= -std else "BELOW by more than one std"
            lines.append(f"- {name}, {title}: validated - mean = {gap:+.4f} (std {std:.4f}): {verdict}")
    for key, title in (METRICS[0], METRICS[3]):
        if all(VALIDATED in rows and PLAIN in rows and rows[PLAIN][key] for rows in builds):
            validated = statistics.fmean(rows[VALIDATED][key]["mean"] for rows in builds)
            plain = statistics.fmean(rows[PLAIN][key]["mean"] for rows in builds)
            verdict = "at least as good" if validated >= plain else "BELOW"
            lines.append(f"- over builds, {title}: validated {validated:.4f} against plain attention {plain:.4f}: {verdict}")
    return lines


@app.command()
def main(
    reports: Annotated[list[Path], typer.Argument(help="bench.json of each build")],
    model: Annotated[str, typer.Option(help="backbone")] = "freedom",
    fusions: Annotated[list[str] | None, typer.Option("--fusion", help="bench labels to show")] = None,
) -> None:
    loaded = [json.loads(path.read_text(encoding="utf-8")) for path in reports]
    names = [path.parent.name for path in reports]
    builds = [build_rows(report, model) for report in loaded]
    lines = table(names, builds, fusions or DEFAULT_FUSIONS)
    lines += ["", "Validation chose:"] + [f"- {name}: {chosen(report, model)}" for name, report in zip(names, loaded)]
    lines += ["", "Checks:"] + checks(names, builds)
    print("\n".join(lines))


if __name__ == "__main__":
    app()
