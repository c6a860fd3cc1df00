"""`python -m offline features`: CLIP features of every catalog item (V views + image)."""

from pathlib import Path
from typing import Annotated

import typer

NAME = "features"


def command(
    data: Annotated[Path, typer.Option(help="catalog folder (items.csv, interactions.csv, images)")],
    out: Annotated[Path, typer.Option(help="run folder; writes RUN/features/")],
    clip: Annotated[
        str | None,
        typer.Option(help="train-clip run folder (or its clip.json), or a CLIP model name [default: RUN/clip]"),
    ] = None,
    pretrained: Annotated[
        str | None, typer.Option(help="with a model name: open_clip pretrained tag or checkpoint file")
    ] = None,
    views: Annotated[str | None, typer.Option(help="views preset (products, movies) or YAML file")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML of FeaturesConfig fields")] = None,
) -> None:
    """Encode every item's view prompts (global last) and image; cached by input and model."""
    from offline.clip.alignment import format_weight_summary
    from offline.clip.features import ATTENTION_TAU, CALIBRATED_TAU, FeaturesConfig, resolve_clip, run_features
    from offline.clip.model import load_clip, resolve_device
    from offline.config import load_config
    from offline.data.catalog import load_catalog

    cfg = load_config(FeaturesConfig, config)
    catalog = load_catalog(data, views)
    handle = load_clip(resolve_clip(clip, pretrained, out, cfg.clip), resolve_device(cfg.device))
    features, report, reused = run_features(catalog, handle, out, cfg)
    meta = features.meta
    folder = out / "features"
    if reused:
        typer.echo(f"features: reused {folder} (same catalog, views, CLIP and settings; key {meta['cache_key'][:12]})")
    else:
        typer.echo(f"features: wrote {folder} in {meta['seconds']:.0f} s")
    typer.echo(
        f"{len(meta['item_ids'])} items x {len(meta['views'])} views, dim {features.image.shape[1]}; "
        f"{meta['chunked_items']} items with chunked text {meta['chunked_by_view']}; "
        f"{len(meta['bad_images'])} bad images"
    )
    typer.echo(f"{'view':<14}{'R@1':>7}{'R@5':>7}{'chance@1':>10}{'texts':>7}")
    for view, row in report.items():
        typer.echo(f"{view:<14}{row['r1']:>7.3f}{row['r5']:>7.3f}{row['chance_r1']:>10.4f}{row['texts']:>7}")
    for key, title in (("attention", f"untrained view weights, attention (tau {ATTENTION_TAU})"),
                       ("calibrated", f"untrained view weights, calibrated attention (tau {CALIBRATED_TAU})")):
        for line in format_weight_summary({view: row[key] for view, row in report.items()}, title):
            typer.echo(line)
