"""The generic catalog folder: loading, views resolution and each bad-data error."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cliper.views import load_views
from offline.data.catalog import CatalogError, load_catalog

ML100K = Path("/work/shared/data/movielens100k_posters")


def test_loads_synthetic_catalog_with_its_views(synth_world: Path) -> None:
    catalog = load_catalog(synth_world)
    assert catalog.views.name == "synthetic-shop"  # from catalog.yaml, not the preset
    assert len(catalog.items) == 150
    assert catalog.items["item_id"].map(type).eq(str).all()
    assert catalog.interactions[["user_id", "item_id"]].map(type).eq(str).all().all()
    assert set(catalog.interactions["item_id"]) <= set(catalog.items["item_id"])
    assert catalog.image_file(0) == synth_world / "images" / "i00000.jpg"
    assert catalog.image_file(np.int64(2)) == synth_world / "images" / "i00002.jpg"
    assert catalog.image_file(catalog.items.iloc[3]) == synth_world / "images" / "i00003.jpg"
    assert all(path is not None and path.is_file() for path in catalog.image_files())


def test_missing_text_becomes_empty_string(make_catalog, product_row) -> None:
    root = make_catalog(
        [product_row("1", brand=""), product_row("2", description=None)],
        [{"user_id": 7, "item_id": 1}],
    )
    catalog = load_catalog(root)
    assert catalog.items.loc[0, "brand"] == ""
    assert catalog.items.loc[1, "description"] == ""
    assert catalog.interactions.loc[0, "user_id"] == "7"
    assert catalog.views.prompts(catalog.items.iloc[0])[1] == "The product brand is Missing."


def test_views_resolution_order(make_catalog, product_row) -> None:
    root = make_catalog([product_row("1")], [])
    assert load_catalog(root).views.name == "products"  # no catalog.yaml: the default preset
    custom = load_views("products").model_dump()
    custom["name"] = "mine"
    (root / "catalog.yaml").write_text(yaml.safe_dump(custom))
    assert load_catalog(root).views.name == "mine"
    assert load_catalog(root, views="products").views.name == "products"  # explicit wins


def test_empty_image_path_means_no_image(make_catalog, product_row) -> None:
    catalog = load_catalog(make_catalog([product_row("1", image_path="")], []))
    assert catalog.image_file(0) is None


def test_missing_files_are_named(tmp_path: Path, make_catalog, product_row) -> None:
    with pytest.raises(CatalogError, match="catalog folder not found"):
        load_catalog(tmp_path / "nowhere")
    root = make_catalog([product_row("1")], [])
    (root / "interactions.csv").unlink()
    with pytest.raises(CatalogError, match=r"interactions file not found: .*interactions\.csv"):
        load_catalog(root)


def test_missing_columns_name_the_view_and_what_was_found(make_catalog, product_row) -> None:
    row = product_row("1")
    del row["brand"]
    with pytest.raises(CatalogError) as error:
        load_catalog(make_catalog([row], []))
    message = str(error.value)
    assert "'brand' (view 'brand')" in message
    assert "found ['item_id', 'title', 'categories', 'description', 'image_path']" in message


def test_missing_image_path_column(make_catalog, product_row) -> None:
    row = product_row("1")
    del row["image_path"]
    with pytest.raises(CatalogError, match=r"items: missing column\(s\) \['image_path'\]"):
        load_catalog(make_catalog([row], []))


def test_missing_interaction_columns(make_catalog, product_row) -> None:
    with pytest.raises(CatalogError, match=r"interactions: missing column\(s\) \['item_id'\]"):
        load_catalog(make_catalog([product_row("1")], [{"user_id": "a", "item": "1"}]))


def test_duplicate_item_ids_are_counted(make_catalog, product_row) -> None:
    items = [product_row(i) for i in ["a", "b", "a", "c", "c", "c"]]
    with pytest.raises(
        CatalogError, match=r"2 item_id\(s\) appear more than once \(5 rows\), e.g. \['a', 'c'\]"
    ):
        load_catalog(make_catalog(items, []))


def test_unknown_items_error_or_drop(make_catalog, product_row) -> None:
    root = make_catalog(
        [product_row("1"), product_row("2")],
        [{"user_id": "u", "item_id": i} for i in ["1", "9", "8", "9", "2"]],
    )
    with pytest.raises(
        CatalogError, match=r"3 of 5 rows refer to 2 item_id\(s\) not in items, e.g. \['8', '9'\]"
    ):
        load_catalog(root)
    catalog = load_catalog(root, unknown_items="drop")
    assert list(catalog.interactions["item_id"]) == ["1", "2"]


def test_bad_views_file_is_a_catalog_error(make_catalog, product_row) -> None:
    root = make_catalog([product_row("1")], [])
    (root / "catalog.yaml").write_text("name: broken\nviews: []\n")
    with pytest.raises(CatalogError, match="cannot load the views"):
        load_catalog(root)


def test_copied_catalog_keeps_working(tmp_path: Path, synth_world: Path) -> None:
    """Image paths are relative to the folder, so a moved catalog still finds its images."""
    moved = Path(
        shutil.copytree(synth_world, tmp_path / "moved", ignore=shutil.ignore_patterns("corpus"))
    )
    catalog = load_catalog(moved)
    assert catalog.image_file(5).is_file() and catalog.image_file(5).parent.parent == moved


@pytest.mark.skipif(not ML100K.is_dir(), reason="real MovieLens-100K data not present")
def test_movielens_100k_with_movies_preset() -> None:
    catalog = load_catalog(ML100K, views="movies")
    assert len(catalog.items) == 1422 and len(catalog.interactions) == 99029
    assert catalog.image_file(0).is_file()
    assert catalog.views.prompts(catalog.items.iloc[0])[0] == "The movie title is Toy Story (1995)."
