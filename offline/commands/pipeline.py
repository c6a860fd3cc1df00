"""`python -m offline pipeline --data DIR --out DIR`: every stage, ending in a verified bundle."""

import time
from pathlib import Path
from typing import Annotated

import typer

from offline.data.split import EvaluationSplit

NAME = "pipeline"


def command(
    data: Annotated[Path, typer.Option(help="catalog folder (items.csv, interactions.csv, images)")],
    out: Annotated[Path, typer.Option(help="output folder: clip/, features/, train/, bundle/")],
    corpus: Annotated[
        Path | None, typer.Option(help="caption corpus to train CLIP on [default: DATA/corpus]")
    ] = None,
    corpus_column: Annotated[
        list[str] | None,
        typer.Option(help="VIEW_COLUMN=CORPUS_COLUMN when the corpus names a column differently (repeatable)"),
    ] = None,
    views: Annotated[str | None, typer.Option(help="views preset (products, movies) or YAML file")] = None,
    clip_model: Annotated[str, typer.Option(help="shipped config or open_clip architecture")] = "cliper-minilm",
    clip_pretrained: Annotated[
        str | None, typer.Option(help="open_clip pretrained tag or weights file (skips train-clip)")
    ] = None,
    finetune: Annotated[bool, typer.Option(help="train-clip from the pretrained weights anyway")] = False,
    backbone: Annotated[str, typer.Option(help="recommender: freedom, vbpr, bm3")] = "freedom",
    split: Annotated[
        EvaluationSplit,
        typer.Option(help="evaluation protocol: temporal (needs timestamps), random (MMRec's), auto: temporal if it can"),
    ] = "auto",
    k_core: Annotated[
        int | None, typer.Option(help="keep users and items with >= K interactions [default: 5 random, 1 temporal]")
    ] = None,
    cold_share: Annotated[
        float | None, typer.Option(help="random split: share of items withheld as new items [default: 0.2]")
    ] = None,
    min_rating: Annotated[float | None, typer.Option(help="drop interactions rated below this")] = None,
    fast: Annotated[bool, typer.Option(help="smoke-test profile: one CLIP epoch, three training epochs")] = False,
    index_factory: Annotated[str, typer.Option(help="FAISS index factory of the bundle")] = "Flat",
    fp16: Annotated[bool, typer.Option("--fp16/--no-fp16", help="also export fp16 graphs for GPU")] = True,
    thumbnails: Annotated[
        bool, typer.Option("--thumbnails/--no-thumbnails", help="export a JPEG thumbnail of every item's image")
    ] = True,
) -> None:
    """train-clip, features, evaluate, refit on every interaction, export, verify; stages whose
    inputs did not change are reused."""
    from offline.commands.train_clip import parse_columns
    from offline.data.split import SplitConfig
    from offline.pipeline import PipelineConfig, PipelineError, run_pipeline

    started = time.perf_counter()
    cfg = PipelineConfig(
        data=data,
        out=out,
        corpus=corpus,
        corpus_columns=parse_columns(corpus_column or []),
        views=views,
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        finetune=finetune,
        backbone=backbone,
        split=SplitConfig(method=split, k_core=k_core, cold_item_ratio=cold_share, min_rating=min_rating),
        profile="fast" if fast else "demo",
        index_factory=index_factory,
        fp16=fp16,
        thumbnails=thumbnails,
    )
    try:
        results = run_pipeline(cfg, typer.echo)
    except PipelineError as exc:
        typer.echo(f"pipeline FAILED: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo("| stage | ran | seconds | |\n| --- | --- | ---: | --- |")
    for result in results:
        ran = "reused" if result.reused else "ran"
        typer.echo(f"| {result.name} | {ran} | {result.seconds:.1f} | {result.detail} |")
    typer.echo(f"pipeline: verified bundle at {out / 'bundle'} in {time.perf_counter() - started:.0f} s")
