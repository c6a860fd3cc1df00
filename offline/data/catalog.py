"""The generic catalog folder: `items.csv`, `interactions.csv`, optional `catalog.yaml`.

Every loader (this one, the Amazon one) ends in `build_catalog`, which checks the frames once
and says exactly what to fix when they cannot be used.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Literal

import pandas as pd

from cliper.views import ViewsConfig, load_views

ITEMS_FILE = "items.csv"
INTERACTIONS_FILE = "interactions.csv"
VIEWS_FILE = "catalog.yaml"
DEFAULT_PRESET = "products"
IMAGE_COLUMN = "image_path"
INTERACTION_COLUMNS = ("user_id", "item_id")
UnknownItems = Literal["error", "drop"]

log = logging.getLogger(__name__)


class CatalogError(ValueError):
    """A catalog that cannot be used, with a message that says what to fix."""


@dataclass
class Catalog:
    """Items (one row each, `item_id` str, text as str with "" for missing) and interactions."""

    root: Path
    items: pd.DataFrame
    interactions: pd.DataFrame
    views: ViewsConfig

    def image_file(self, item: Integral | Mapping[str, object]) -> Path | None:
        """The image of an item (a row, or its position in `items`); None when it has no image."""
        row = self.items.iloc[int(item)] if isinstance(item, Integral) else item
        relative = str(row[IMAGE_COLUMN]).strip()
        return self.root / relative if relative else None

    def image_files(self) -> list[Path | None]:
        """`image_file` of every item, in the order of `items`."""
        return [self.image_file(row) for row in self.items.to_dict("records")]


def resolve_views(root: Path, views: ViewsConfig | str | Path | None) -> ViewsConfig:
    """The explicit views (a config, preset name or YAML path), else `root/catalog.yaml`, else
    the `products` preset."""
    if isinstance(views, ViewsConfig):
        return views
    spec = views if views is not None else root / VIEWS_FILE
    if views is None and not spec.is_file():
        spec = DEFAULT_PRESET
    try:
        return load_views(spec)
    except (FileNotFoundError, ValueError) as exc:
        raise CatalogError(f"cannot load the views of {root}: {exc}") from exc


def read_csv(path: Path, what: str, **kwargs: object) -> pd.DataFrame:
    """A CSV with a clear error when it is missing or unparsable."""
    if not path.is_file():
        raise CatalogError(f"{what} file not found: {path}")
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CatalogError(f"cannot read {path}: {exc}") from exc


def load_catalog(
    root: Path,
    views: ViewsConfig | str | Path | None = None,
    unknown_items: UnknownItems = "error",
) -> Catalog:
    """Load a generic catalog folder (see docs/architecture.md)."""
    root = Path(root)
    if not root.is_dir():
        raise CatalogError(f"catalog folder not found: {root}")
    views = resolve_views(root, views)
    items = read_csv(root / ITEMS_FILE, "items", dtype=str, keep_default_na=False)
    interactions = read_csv(
        root / INTERACTIONS_FILE,
        "interactions",
        dtype={column: str for column in INTERACTION_COLUMNS},
    )
    return build_catalog(root, items, interactions, views, unknown_items)


def build_catalog(
    root: Path,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    views: ViewsConfig,
    unknown_items: UnknownItems = "error",
) -> Catalog:
    """Check and normalise raw frames into a `Catalog`."""
    _require_item_columns(items, views)
    _require_columns(interactions, INTERACTION_COLUMNS, "interactions")
    items = items.copy()
    text_columns = [c for c in items.columns if not pd.api.types.is_numeric_dtype(items[c])]
    items[text_columns] = items[text_columns].fillna("").astype(str)
    items["item_id"] = items["item_id"].str.strip()
    _reject_duplicates(items["item_id"])
    interactions = interactions.copy()
    for column in INTERACTION_COLUMNS:
        empty = int(interactions[column].isna().sum())
        if empty:
            raise CatalogError(f"interactions: {empty} rows have an empty {column}")
        interactions[column] = interactions[column].astype(str).str.strip()
    interactions = _check_known_items(interactions, set(items["item_id"]), unknown_items)
    return Catalog(root, items.reset_index(drop=True), interactions.reset_index(drop=True), views)


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...] | list[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise CatalogError(f"{what}: missing column(s) {missing}; found {list(frame.columns)}")


def _require_item_columns(items: pd.DataFrame, views: ViewsConfig) -> None:
    _require_columns(items, ["item_id", IMAGE_COLUMN], "items")
    needs = [
        (column, view.name)
        for view in views.views
        for column in view.columns
        if column not in items.columns
    ]
    if needs:
        listed = ", ".join(f"{column!r} (view {view!r})" for column, view in needs)
        raise CatalogError(
            f"items: missing column(s) {listed} needed by views {views.name!r}; "
            f"found {list(items.columns)}. Rename the columns or pass other views "
            f"(a preset name or a catalog.yaml)."
        )


def _reject_duplicates(item_ids: pd.Series) -> None:
    duplicated = item_ids[item_ids.duplicated(keep=False)]
    if len(duplicated):
        examples = sorted(set(duplicated))[:5]
        raise CatalogError(
            f"items: {duplicated.nunique()} item_id(s) appear more than once "
            f"({len(duplicated)} rows), e.g. {examples}; item ids must be unique"
        )
    if (item_ids == "").any():
        raise CatalogError(f"items: {int((item_ids == '').sum())} row(s) have an empty item_id")


def _check_known_items(
    interactions: pd.DataFrame, known: set[str], unknown_items: UnknownItems
) -> pd.DataFrame:
    unknown = ~interactions["item_id"].isin(known)
    if not unknown.any():
        return interactions
    examples = sorted(set(interactions.loc[unknown, "item_id"]))[:5]
    message = (
        f"interactions: {int(unknown.sum())} of {len(interactions)} rows refer to "
        f"{interactions.loc[unknown, 'item_id'].nunique()} item_id(s) not in items, e.g. {examples}"
    )
    if unknown_items == "error":
        raise CatalogError(message + "; fix the ids or load with unknown_items='drop'")
    if unknown_items != "drop":
        raise CatalogError(f"unknown_items must be 'error' or 'drop', got {unknown_items!r}")
    log.warning("%s; dropped them", message)
    return interactions[~unknown]
