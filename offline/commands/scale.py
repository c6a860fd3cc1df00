"""`python -m offline scale`: write a synthetic long-tail catalog and features of Amazon-Clothing's
shape (or `--factor` times it), for measuring training cost at scale."""

from pathlib import Path
from typing import Annotated

import typer

NAME = "scale"


def command(
    out: Annotated[Path, typer.Option("--out", help="folder to write the catalog and features/ into")],
    factor: Annotated[
        int | None, typer.Option(help="multiplies users, items and interactions (10: 393,870 users) [default: 1]")
    ] = None,
    users: Annotated[int | None, typer.Option(help="users before the factor [default: 39,387]")] = None,
    items: Annotated[int | None, typer.Option(help="items before the factor [default: 23,033]")] = None,
    interactions: Annotated[
        int | None, typer.Option(help="interactions before the factor [default: 278,677]")
    ] = None,
    dim: Annotated[int | None, typer.Option(help="image and text feature size [default: 256]")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed [default: 0]")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML of ScaleConfig fields (exponents, clusters, affinity, ...)")
    ] = None,
) -> None:
    """Long-tail users and items, clustered content: items.csv, interactions.csv, features/."""
    from offline.config import load_config
    from offline.data.scale import ScaleConfig, generate_scale

    cfg = load_config(
        ScaleConfig, config, factor=factor, users=users, items=items, interactions=interactions, dim=dim, seed=seed
    )
    typer.echo(f"writing a scale world to {out}: {cfg.model_dump()}")
    typer.echo(str(generate_scale(out, cfg)))
