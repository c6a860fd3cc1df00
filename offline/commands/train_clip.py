"""`python -m offline train-clip`: contrastive CLIP training on a caption corpus or a catalog."""

from pathlib import Path
from typing import Annotated

import typer

NAME = "train-clip"


def command(
    data: Annotated[Path, typer.Option(help="caption corpus (captions.csv) or catalog (items.csv) folder")],
    out: Annotated[Path, typer.Option(help="run folder; writes RUN/clip/")],
    config: Annotated[Path | None, typer.Option(help="YAML of TrainClipConfig fields")] = None,
    model: Annotated[
        str | None, typer.Option(help="shipped config (cliper-minilm, cliper-tiny) or open_clip name")
    ] = None,
    pretrained: Annotated[
        str | None, typer.Option(help="open_clip pretrained tag or local checkpoint file")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    views: Annotated[str | None, typer.Option(help="views preset (products, movies) or YAML file")] = None,
    column: Annotated[
        list[str] | None,
        typer.Option(help="VIEW_COLUMN=CORPUS_COLUMN, e.g. genres=genre (repeatable)"),
    ] = None,
) -> None:
    """Train CLIP on (image, view prompt) pairs; report held-out image-to-text Recall@1/5."""
    from offline.clip.train import TrainClipConfig, train_clip
    from offline.config import load_config

    cfg = load_config(TrainClipConfig, config, epochs=epochs, seed=seed)
    if model is not None:  # a new architecture does not inherit the file's weights
        cfg.clip = cfg.clip.model_copy(update={"model": model, "pretrained": pretrained, "checkpoint": None})
    elif pretrained is not None:
        cfg.clip = cfg.clip.model_copy(update={"pretrained": pretrained, "checkpoint": None})
    cfg.columns = {**cfg.columns, **parse_columns(column or [])}
    metrics = train_clip(data, out, cfg, views)
    typer.echo(_summary(metrics, out))


def parse_columns(pairs: list[str]) -> dict[str, str]:
    """`["genres=genre"]` -> `{"genres": "genre"}`."""
    from offline.config import ConfigError

    columns = {}
    for pair in pairs:
        view_column, sep, corpus_column = pair.partition("=")
        if not (sep and view_column and corpus_column):
            raise ConfigError(f"--column takes VIEW_COLUMN=CORPUS_COLUMN, got {pair!r}")
        columns[view_column.strip()] = corpus_column.strip()
    return columns


def _summary(metrics: dict, out: Path) -> str:
    lines = [
        f"trained on {metrics['train_images']} images ({metrics['captions']} captions), "
        f"{metrics['epochs']} epochs in {metrics['seconds']['train']:.0f} s on {metrics['device']}; "
        f"loss {metrics['loss'][0]:.3f} -> {metrics['loss'][-1]:.3f}" if metrics["loss"] else "no training epochs",
    ]
    for split, report in metrics["retrieval"].items():
        before, after = report["before"], report["after"]
        lines.append(
            f"{split} image->text ({after['queries']} images, global prompt): "
            f"R@1 {before['r1']:.3f} -> {after['r1']:.3f}, R@5 {before['r5']:.3f} -> {after['r5']:.3f} "
            f"(chance {after['chance_r1']:.3f} / {after['chance_r5']:.3f})"
        )
    lines.append(f"wrote {out / 'clip'} (checkpoint.pt, clip.json, metrics.json) in {metrics['seconds']['total']:.0f} s")
    return "\n".join(lines)
