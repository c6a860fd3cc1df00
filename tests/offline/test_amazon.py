"""The Amazon / MMRec layout loader, on tiny folders written here."""

import gzip
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from offline.data.amazon import load_amazon
from offline.data.catalog import CatalogError

RECORDS = [
    {
        "asin": "A1",
        "title": "Red mug",
        "brand": "Acme",
        "imUrl": "http://x/images/I/51abc.jpg",
        "categories": [["Home & Kitchen", "Mugs"], ["Home & Kitchen", "Gifts"]],
        "description": "A mug.",
    },
    {
        "asin": "B2",
        "title": "Blue ball",
        "categories": [["Sports", "Balls"]],
        "imUrl": "http://x/I/77zz.jpg",
    },
    {"asin": "C3", "title": "Unrated lamp", "brand": "Lumen", "categories": [["Home", "Lamps"]]},
]


def meta_lines() -> list[str]:
    """A strict-JSON line, a python-literal line (as in the 2014 dumps), a repeat, a blank."""
    return [
        json.dumps(RECORDS[0]),
        repr(RECORDS[1]),
        repr(RECORDS[2]),
        repr({**RECORDS[0], "title": "dup"}),
        "",
    ]


@pytest.fixture
def amazon(tmp_path: Path) -> Path:
    root = tmp_path / "baby"
    (root / "images").mkdir(parents=True)
    (root / "meta_Baby.json").write_text("\n".join(meta_lines()))
    ratings = [
        ("u1", "A1", 5, 100),
        ("u2", "A1", 4, 101),
        ("u1", "B2", 3, 102),
        ("u3", "ZZ", 5, 103),
    ]
    pd.DataFrame(ratings).to_csv(root / "ratings_Baby.csv", header=False, index=False)
    Image.new("RGB", (8, 8)).save(root / "images" / "A1.jpg")
    Image.new("RGB", (8, 8)).save(root / "images" / "77zz.jpg")  # found through imUrl
    return root


def test_loads_meta_ratings_and_images(amazon: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        catalog = load_amazon(amazon)
    assert catalog.views.name == "products"
    assert list(catalog.items["item_id"]) == ["A1", "B2"]  # C3 has no ratings
    first = catalog.items.iloc[0]
    assert first["title"] == "Red mug"  # the repeated A1 record is ignored
    assert first["categories"] == "Home & Kitchen|Mugs|Gifts"
    assert catalog.items.iloc[1]["brand"] == "" and catalog.items.iloc[1]["description"] == ""
    assert catalog.image_file(0) == amazon / "images" / "A1.jpg"
    assert catalog.image_file(1) == amazon / "images" / "77zz.jpg"
    assert len(catalog.interactions) == 3  # the rating of ZZ (no metadata) is dropped
    assert "1 repeated asin records ignored" in caplog.text
    assert "1 of 4 rows refer to 1 item_id(s) not in items, e.g. ['ZZ']" in caplog.text


def test_keep_unrated_items_and_strict_unknown_items(amazon: Path) -> None:
    assert len(load_amazon(amazon, only_interacted=False).items) == 3
    with pytest.raises(CatalogError, match=r"e.g. \['ZZ'\]"):
        load_amazon(amazon, unknown_items="error")


def test_gzipped_meta(amazon: Path) -> None:
    meta = amazon / "meta_Baby.json"
    with gzip.open(amazon / "meta_Baby.json.gz", "wt") as handle:
        handle.write(meta.read_text())
    meta.unlink()
    assert len(load_amazon(amazon, category="Baby").items) == 2


def test_2018_style_record(amazon: Path) -> None:
    record = {
        "asin": "A1",
        "title": "Mug",
        "category": ["Home", "Mugs"],
        "brand": "Acme",
        "description": ["Holds tea.", "Dishwasher safe."],
        "imageURLHighRes": ["http://x/hi.jpg"],
    }
    (amazon / "meta_Baby.json").write_text(json.dumps(record))
    row = load_amazon(amazon).items.iloc[0]
    assert (row["categories"], row["description"]) == ("Home|Mugs", "Holds tea. Dishwasher safe.")


def test_mmrec_inter_with_id_mappings(amazon: Path) -> None:
    (amazon / "ratings_Baby.csv").unlink()
    pd.DataFrame(
        {
            "userID": [0, 1, 0],
            "itemID": [0, 0, 1],
            "rating": [5, 4, 3],
            "timestamp": [1, 2, 3],
            "x_label": [0, 1, 2],
        }
    ).to_csv(amazon / "baby.inter", sep="\t", index=False)
    pd.DataFrame({"asin": ["A1", "B2"], "itemID": [0, 1]}).to_csv(
        amazon / "i_id_mapping.csv", sep="\t", index=False
    )
    pd.DataFrame({"user_id": ["alice", "bob"], "userID": [0, 1]}).to_csv(
        amazon / "u_id_mapping.csv", sep="\t", index=False
    )
    catalog = load_amazon(amazon)
    assert list(catalog.interactions["item_id"]) == ["A1", "A1", "B2"]
    assert list(catalog.interactions["user_id"]) == ["alice", "bob", "alice"]
    assert list(catalog.interactions["x_label"]) == [0, 1, 2]
    pd.DataFrame({"asin": ["A1"], "itemID": [0]}).to_csv(
        amazon / "i_id_mapping.csv", sep="\t", index=False
    )
    with pytest.raises(
        CatalogError, match=r"1 interactions have ids it does not map, e.g. \['1'\]"
    ):
        load_amazon(amazon)


def test_ambiguous_or_missing_files(amazon: Path, tmp_path: Path) -> None:
    (amazon / "meta_Toys.json").write_text(json.dumps(RECORDS[2]))
    with pytest.raises(
        CatalogError, match=r"found \['meta_Baby.json', 'meta_Toys.json'\]; pass category="
    ):
        load_amazon(amazon)
    with pytest.raises(
        CatalogError, match=r"expected one interactions .* matching '\*\.inter', found none"
    ):
        load_amazon(amazon, category="Toys")
    with pytest.raises(CatalogError, match="Amazon data folder not found"):
        load_amazon(tmp_path / "nowhere")


def test_bad_meta_line_is_located(amazon: Path) -> None:
    (amazon / "meta_Baby.json").write_text(json.dumps(RECORDS[0]) + "\n{'asin': 'X', broken\n")
    with pytest.raises(CatalogError, match=r"meta_Baby.json:2: neither JSON nor a python dict"):
        load_amazon(amazon)
    (amazon / "meta_Baby.json").write_text('{"title": "no asin"}\n')
    with pytest.raises(CatalogError, match=r"meta_Baby.json:1: expected a record with an 'asin'"):
        load_amazon(amazon)
