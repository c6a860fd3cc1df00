"""`python -m offline export --run RUN --out BUNDLE`: a trained run as a model bundle."""

import time
from pathlib import Path
from typing import Annotated

import typer

from cliper.manifest import IndexSpec

NAME = "export"


def command(
    run: Annotated[Path, typer.Option(help="run folder written by `python -m offline train`")],
    out: Annotated[Path, typer.Option(help="bundle folder to write (an existing bundle there is replaced)")],
    index_factory: Annotated[
        str, typer.Option(help="FAISS index factory: Flat (exact), IVF256,Flat, HNSW32, ...")
    ] = "Flat",
    search_params: Annotated[str, typer.Option(help="FAISS search parameters, e.g. nprobe=16")] = "",
    clip_index_factory: Annotated[
        str, typer.Option(help="FAISS index factory of the CLIP search index (POST /search)")
    ] = "Flat",
    clip_search_params: Annotated[str, typer.Option(help="FAISS search parameters of the CLIP search index")] = "",
    fp16: Annotated[
        bool, typer.Option("--fp16/--no-fp16", help="also write fp16 graphs (served only on the CUDA provider)")
    ] = False,
    int8: Annotated[
        bool, typer.Option("--int8/--no-int8", help="also write int8 image and text encoders for CPU serving")
    ] = False,
    thumbnails: Annotated[
        bool, typer.Option("--thumbnails/--no-thumbnails", help="write a JPEG thumbnail of every item's image")
    ] = True,
    clip: Annotated[
        str | None,
        typer.Option(help="train-clip run folder or clip.json [default: the CLIP the run's features were made with]"),
    ] = None,
) -> None:
    """Export ONNX encoders and item tower, tokenizer, vectors, seen items, the items' fields, CLIP
    embeddings, view weights and thumbnails, the FAISS indexes, manifest."""
    from offline.clip.features import resolve_clip
    from offline.export.bundle import ExportConfig, bundle_size, export_bundle

    started = time.perf_counter()
    spec = resolve_clip(clip, None, run, None) if clip is not None else None
    cfg = ExportConfig(index_factory=index_factory, search_params=search_params, clip_index_factory=clip_index_factory,
                       clip_search_params=clip_search_params, fp16=fp16, int8=int8, thumbnails=thumbnails)
    manifest = export_bundle(run, out, cfg, spec)
    typer.echo(
        f"export: wrote {out} (version {manifest.bundle_version}) in {time.perf_counter() - started:.1f} s, "
        f"{bundle_size(out) / 2**20:.1f} MiB: {manifest.backbone}/{manifest.fusion.mode}, "
        f"item vectors of {manifest.dims.item}, index {_index(manifest.index)}, "
        f"CLIP index {_index(manifest.clip_index)}, {'with' if thumbnails else 'no'} thumbnails, "
        f"graphs fp32{' + fp16' if fp16 else ''}{' + int8 encoders' if int8 else ''}"
    )


def _index(spec: IndexSpec) -> str:
    recall = f", recall@50 vs exact {spec.recall_at_50:.4f}" if spec.recall_at_50 is not None else " (exact)"
    return f"{spec.factory}{recall}"
