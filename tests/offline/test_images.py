"""Image loading: good files decode, bad ones become a counted placeholder."""

import logging
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from offline.data.images import ImageLoader, load_rgb


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.png"
    Image.new("L", (40, 30), 200).save(good)  # greyscale on disk, RGB when loaded
    full = tmp_path / "full.jpg"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(full, quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image")
    return {"good": good, "full": full, "truncated": truncated, "garbage": garbage}


def test_load_rgb_converts_to_rgb(images: dict[str, Path]) -> None:
    image = load_rgb(images["good"])
    assert image.mode == "RGB" and image.size == (40, 30)
    assert image.getpixel((0, 0)) == (200, 200, 200)


def test_load_rgb_raises_on_truncated_file(images: dict[str, Path]) -> None:
    with pytest.raises(OSError):
        load_rgb(images["truncated"])


def test_bad_images_become_counted_placeholders(images: dict[str, Path], tmp_path: Path) -> None:
    loader = ImageLoader()
    assert loader.load("ok", images["full"]).getpixel((5, 5))[1] > 150
    placeholders = [
        loader.load("missing", tmp_path / "absent.jpg"),
        loader.load("none", None),
        loader.load("truncated", images["truncated"]),
        loader.load("garbage", images["garbage"]),
    ]
    assert all(p.size == (224, 224) and p.getpixel((0, 0)) == (128, 128, 128) for p in placeholders)
    reasons = dict(loader.bad_images)
    assert list(reasons) == ["missing", "none", "truncated", "garbage"]
    assert reasons["missing"].startswith("missing file")
    assert reasons["none"] == "no image path"
    assert "truncated" in reasons["truncated"].lower()
    assert reasons["garbage"].startswith("unreadable: UnidentifiedImageError")
    assert loader.summary().startswith("4 of 5 images could not be used")


def test_placeholder_is_configurable(tmp_path: Path) -> None:
    loader = ImageLoader(placeholder_size=(32, 16), placeholder_color=(0, 0, 0))
    image = loader.load("x", tmp_path / "absent.png")
    assert image.size == (32, 16) and image.getpixel((3, 3)) == (0, 0, 0)


def test_decompression_bomb_is_a_bad_image(images: dict[str, Path], monkeypatch) -> None:
    loader = ImageLoader(max_pixels=1000)  # 64 x 64 = 4096 pixels
    loader.load("big", images["full"])
    assert loader.bad_images[0][1].startswith("decompression bomb")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own check, in Image.open
    default = ImageLoader()
    default.load("big", images["full"])
    assert default.bad_images[0][1].startswith("decompression bomb")


def test_summary_warning(images: dict[str, Path], caplog) -> None:
    loader = ImageLoader()
    loader.load("a", images["full"])
    with caplog.at_level(logging.WARNING):
        loader.warn_if_bad()
    assert caplog.records == [] and loader.summary() == "all 1 images loaded"
    loader.load("b", images["garbage"])
    with caplog.at_level(logging.WARNING):
        loader.warn_if_bad()
    assert "1 of 2 images could not be used" in caplog.text


def test_synthetic_world_broken_images_are_caught(synth_world: Path) -> None:
    noise = pd.read_csv(synth_world / "noise.csv", dtype={"item_id": str})
    loader = ImageLoader()
    for item_id in noise["item_id"]:
        loader.load(item_id, synth_world / "images" / f"{item_id}.jpg")
    broken = set(noise.loc[noise["image_broken"], "item_id"])
    assert broken and {item for item, _ in loader.bad_images} == broken
