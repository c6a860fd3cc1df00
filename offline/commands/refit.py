"""`python -m offline refit --run RUN --out REFIT`: the served model, trained on every interaction."""

from pathlib import Path
from typing import Annotated

import typer

NAME = "refit"


def command(
    run: Annotated[Path, typer.Option("--run", help="evaluation run folder written by `offline train`")],
    out: Annotated[Path, typer.Option("--out", help="folder for the refit run (what `offline export` reads)")],
) -> None:
    """Train the evaluation run's model again on every interaction and catalog item, for the epoch
    count its validation chose; export the result to serve it."""
    import json

    from offline.config import ConfigError
    from offline.train.run import METRICS_FILE, RunConfig, refit_run

    if not (run / METRICS_FILE).is_file():
        raise ConfigError(f"{run / METRICS_FILE} not found: is {run} a run folder written by `python -m offline train`?")
    evaluation = json.loads((run / METRICS_FILE).read_text(encoding="utf-8"))
    if evaluation.get("refit"):
        raise ConfigError(f"{run} is a refit already; pass the evaluation run it came from")
    metrics = refit_run(RunConfig.from_yaml(run / "config.yaml"), out.resolve(), evaluation)
    typer.echo(f"refit {metrics['model']}/{metrics['content_mode']} for {metrics['epochs_run']} epochs: {metrics['split']}")
    typer.echo(f"wrote {out}; export it with `python -m offline export --run {out} --out BUNDLE`")
