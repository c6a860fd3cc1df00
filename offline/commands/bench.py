"""`python -m offline bench`: backbones x content modes x seeds, with a report and a plot."""

from pathlib import Path
from typing import Annotated

import typer

from offline.data.split import EvaluationSplit

NAME = "bench"


def _names(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def command(
    data: Annotated[Path, typer.Option("--data", help="catalog folder (items.csv, interactions.csv)")],
    out: Annotated[Path, typer.Option("--out", help="folder for bench.md, bench.json and the plot")],
    features: Annotated[
        Path | None, typer.Option("--features", help="features folder (RUN/features); needed by multi-modal models")
    ] = None,
    views: Annotated[str | None, typer.Option("--views", help="views preset or YAML of the catalog")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="seeds per variant (default 3)")] = None,
    models: Annotated[
        str | None, typer.Option("--models", help="comma-separated backbones (default freedom,bm3,vbpr,lightgcn,bpr)")
    ] = None,
    modes: Annotated[
        str | None,
        typer.Option("--modes", help="comma-separated content modes (default none,image,global,mean,concat,attention)"),
    ] = None,
    max_epochs: Annotated[int | None, typer.Option("--max-epochs", help="epoch cap per run (default 200)")] = None,
    patience: Annotated[int | None, typer.Option("--patience", help="early-stopping patience (default 10)")] = None,
    split: Annotated[
        EvaluationSplit | None,
        typer.Option("--split", help="temporal, random (MMRec's protocol) or auto: temporal when there are timestamps"),
    ] = None,
    ablation: Annotated[bool, typer.Option(help="per-view ablation of the best multi-modal backbone")] = True,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML of BenchConfig fields (split, train, tau, ...)")
    ] = None,
) -> None:
    """Benchmark backbones and CLIPER fusion modes; prints and writes the table."""
    from offline.config import load_config, read_yaml
    from offline.train.bench import BenchConfig, run_bench

    settings = read_yaml(config) if config is not None else {}
    train = {**settings.get("train", {}), "epochs": max_epochs, "patience": patience}
    settings["train"] = {key: value for key, value in train.items() if value is not None}
    if split is not None:
        settings["split"] = {**settings.get("split", {}), "method": split}
    cli = {
        "data": data,
        "out": out,
        "features": features,
        "views": views,
        "seeds": seeds,
        "models": _names(models),
        "modes": _names(modes),
        "ablation": ablation,
    }
    settings.update({key: value for key, value in cli.items() if value is not None})
    cfg = load_config(BenchConfig, **settings)
    report = run_bench(cfg)
    typer.echo((Path(cfg.out) / "bench.md").read_text(encoding="utf-8"))
    typer.echo(f"wrote {cfg.out} ({len(report['runs'])} runs)")
