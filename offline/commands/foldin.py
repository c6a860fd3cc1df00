"""`python -m offline foldin --run RUN --bundle BUNDLE`: does the service's fold-in beat a stale vector?"""

from pathlib import Path
from typing import Annotated

import typer

NAME = "foldin"


def command(
    run: Annotated[Path, typer.Option("--run", help="evaluation run folder with a temporal split (`offline train`)")],
    bundle: Annotated[Path, typer.Option("--bundle", help="the bundle exported from that run (`offline export`)")],
    out: Annotated[Path | None, typer.Option("--out", help="also write foldin.json and foldin.md here")] = None,
) -> None:
    """Fold in the first half of each user's test-period interactions and rank the rest: stale
    vectors, the service's fold-in rules, a retrain that includes the folded half, popularity."""
    import json

    from offline.train.foldin_run import markdown, measure_fold_in

    report = measure_fold_in(run, bundle)
    table = markdown(report)
    typer.echo(table)
    for note in report["notes"].values():
        typer.echo(f"- {note}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "foldin.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        (out / "foldin.md").write_text(table + "\n", encoding="utf-8")
        typer.echo(f"wrote {out}")
