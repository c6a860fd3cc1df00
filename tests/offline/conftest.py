"""Shared fixtures of the offline tests: a tiny synthetic world and a hand-made catalog folder."""

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from offline.data.synth import SynthConfig, generate

TINY_WORLD = SynthConfig(
    items=150,
    users=80,
    corpus_items=40,
    image_size=32,
    min_interactions=8,
    max_interactions=20,
    broken_images=0.03,
)


@pytest.fixture(scope="session")
def synth_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic world (catalog + noise + corpus), generated once per session."""
    out = tmp_path_factory.mktemp("synth_world")
    generate(out, TINY_WORLD)
    return out


@pytest.fixture(scope="session")
def tiny_world_config() -> SynthConfig:
    return TINY_WORLD


def product(item_id: str, **fields: str) -> dict:
    """An items.csv row with every column of the products views."""
    row = {
        "item_id": item_id,
        "title": f"Item {item_id}",
        "brand": "Acme",
        "categories": "Kitchen|Mugs",
        "description": "A mug.",
        "image_path": f"images/{item_id}.jpg",
    }
    row.update(fields)
    return row


@pytest.fixture
def make_catalog(tmp_path: Path) -> Callable[..., Path]:
    """Writes a catalog folder (no images) from item and interaction rows; returns its path."""

    def write(items: list[dict], interactions: list[dict], name: str = "catalog") -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(items).to_csv(root / "items.csv", index=False)
        pd.DataFrame(interactions or {"user_id": [], "item_id": []}).to_csv(
            root / "interactions.csv", index=False
        )
        return root

    return write


@pytest.fixture
def product_row() -> Callable[..., dict]:
    """Builds an items.csv row with every column of the products views."""
    return product


@pytest.fixture(scope="session")
def tiny_run(synth_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FREEDOM run folder on `synth_world` with cliper-tiny features (export, verify tests)."""
    from tiny_run import train_tiny_run

    return train_tiny_run(synth_world, tmp_path_factory.mktemp("tiny_run"))


CALIBRATED = {"content_mode": "attention_calibrated", "tau": 0.5, "model_overrides": {"view_alpha": 0.5}}


@pytest.fixture(scope="session")
def calibrated_run(synth_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like `tiny_run`, with calibrated attention (tau 0.5) mixed half and half with uniform weights."""
    from tiny_run import train_tiny_run

    return train_tiny_run(synth_world, tmp_path_factory.mktemp("calibrated_run"), **CALIBRATED)
