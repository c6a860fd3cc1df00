"""A tiny trained run (cliper-tiny features, FREEDOM for a few epochs) for the export tests."""

from pathlib import Path
from typing import Any

from offline.clip.features import FeaturesConfig, run_features
from offline.clip.model import ClipSpec, load_clip
from offline.data.catalog import load_catalog
from offline.train.run import RunConfig, train_run

TINY_CLIP = ClipSpec(model="cliper-tiny")


def train_tiny_run(world: Path, out: Path, model: str = "freedom", **settings: Any) -> Path:
    """Features of `world` with the random-init tiny CLIP, then `model` for 3 epochs (other
    `RunConfig` fields from `settings`); the run folder."""
    run_features(load_catalog(world), load_clip(TINY_CLIP), out, FeaturesConfig(clip=TINY_CLIP))
    config = RunConfig(data=world, features=out / "features", model=model, epochs=3, out=out / "train", **settings)
    train_run(config, progress=False)
    return out / "train"
