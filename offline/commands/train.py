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
    from offline.clip.alignment import format_weight_summary
    from offline.train.fusion_grid import label
    from offline.train.run import RunConfig, train_run

    cfg = RunConfig.from_yaml(config, out=out.resolve() if out is not None else None)
    metrics = train_run(cfg)
    if "fusion_choice" in metrics:
        choice = metrics["fusion_choice"]
        typer.echo(f"fusion chosen on validation {choice['metric']}: {label(choice['chosen'])}")
        for cell in choice["grid"]:
            typer.echo(f"  {label(cell):<36}{cell['valid_' + choice['metric']]:.4f}{'  <-' if cell['chosen'] else ''}")
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
    if metrics["view_weights"]:
        attention = metrics["alpha"] is not None
        fusion = label({"mode": metrics["content_mode"], "tau": metrics["tau"] if attention else None,
                        "alpha": metrics["alpha"]})
        for line in format_weight_summary(metrics["view_weights"], f"view weights of {fusion} over the items"):
            typer.echo(line)
    typer.echo(f"wrote {cfg.out}")
