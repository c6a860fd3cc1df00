"""`python -m offline synth`: write the synthetic world (catalog, noise, caption corpus)."""

from pathlib import Path
from typing import Annotated

import typer

NAME = "synth"


def command(
    out: Annotated[Path, typer.Option("--out", help="folder to write the world into")],
    items: Annotated[int | None, typer.Option(help="catalog items [default: 2000]")] = None,
    users: Annotated[int | None, typer.Option(help="users [default: 1000]")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed [default: 0]")] = None,
    corpus_items: Annotated[
        int | None, typer.Option("--corpus-items", help="caption-corpus items [default: 1500]")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML of SynthConfig fields (noise shares, image size, ...)")
    ] = None,
) -> None:
    """Synthetic shop: items.csv, interactions.csv, catalog.yaml, images/, noise.csv, corpus/."""
    from offline.config import load_config
    from offline.data.synth import SynthConfig, generate

    cfg = load_config(
        SynthConfig, config, items=items, users=users, seed=seed, corpus_items=corpus_items
    )
    typer.echo(f"writing a synthetic world to {out}: {cfg.model_dump()}")
    typer.echo(str(generate(out, cfg)))
