"""`python -m offline train --config RUN.yaml`: train one backbone and write its run folder."""

from pathlib import Path
from typing import Annotated

import typer

NAME = "train"


def command(
    config: Annotated[Path, typer.Option("--config", help="RunConfig YAML (data, features, model, ...)")],
    out: Annotated[Path | None, typer.Option("--out", help="run folder; overrides `out` in the YAML")] = None,
) -> None:
    """Train a backbone with early stopping; write checkpoint, metrics, history, config, split."""
    from offline.train.run import RunConfig, train_run

    cfg = RunConfig.from_yaml(config, out=out.resolve() if out is not None else None)
    metrics = train_run(cfg)
    test = metrics["test"]
    typer.echo(
        f"{metrics['model']}/{metrics['content_mode']}: best epoch {metrics['best_epoch']} of "
        f"{metrics['epochs_run']} ({metrics['seconds_per_epoch']} s/epoch); test recall@20 "
        f"{test['recall@20']:.4f}, ndcg@20 {test['ndcg@20']:.4f}"
    )
    if metrics["cold"] is not None:
        typer.echo(
            f"cold recall@20: {metrics['cold']['all']['recall@20']:.4f} among all items, "
            f"{metrics['cold']['cold_only']['recall@20']:.4f} among cold items"
        )
    typer.echo(f"wrote {cfg.out}")
