"""The Amazon review-data / MMRec folder layout, loaded as a `Catalog`.

    meta_<Category>.json[.gz]   one record per line: strict JSON, or the python-literal dicts of
                                the 2014 dumps; asin, title, brand, categories, description, imUrl
    ratings_<Category>.csv      user,item,rating,timestamp (no header)
      or <name>.inter           MMRec's TSV (userID itemID rating timestamp x_label) with integer
                                ids, mapped back to raw ids by i_id_mapping.csv / u_id_mapping.csv
    images/<asin>.jpg           (or images/<basename of imUrl>)

MMRec's `x_label` is kept as a column but not used: `split.py` makes its own split.
"""

import ast
import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from cliper.views import ViewsConfig
from offline.data.catalog import (
    Catalog,
    CatalogError,
    UnknownItems,
    build_catalog,
    read_csv,
    resolve_views,
)

log = logging.getLogger(__name__)

RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
INTER_COLUMNS = {"userID": "user_id", "itemID": "item_id"}


def load_amazon(
    root: Path,
    category: str | None = None,
    views: ViewsConfig | str | Path | None = None,
    unknown_items: UnknownItems = "drop",
    only_interacted: bool = True,
) -> Catalog:
    """Load an Amazon/MMRec folder. `category` picks `meta_<category>.json[.gz]` when there are
    several. Ratings on items without metadata are dropped (and counted) unless
    `unknown_items="error"`; with `only_interacted`, items nobody interacted with are left out.
    """
    root = Path(root)
    if not root.is_dir():
        raise CatalogError(f"Amazon data folder not found: {root}")
    views = resolve_views(root, views)
    items = read_meta(_one_file(root, f"meta_{category or '*'}.json*", "metadata"))
    interactions = _read_interactions(root, category)
    if only_interacted:
        items = items[items["item_id"].isin(set(interactions["item_id"]))]
    items = items.assign(
        image_path=[
            _image_path(root, asin, url) for asin, url in zip(items["item_id"], items.pop("imUrl"))
        ]
    )
    return build_catalog(root, items.reset_index(drop=True), interactions, views, unknown_items)


def read_meta(path: Path) -> pd.DataFrame:
    """One row per asin (the first record wins).

    Columns: item_id, title, brand, categories ("A|B|C"), description, imUrl.
    """
    rows = [
        _item_row(record)
        for record in tqdm(_records(path), desc=f"reading {path.name}", unit="item", leave=False)
    ]
    items = pd.DataFrame(
        rows, columns=["item_id", "title", "brand", "categories", "description", "imUrl"]
    )
    repeated = items["item_id"].duplicated()
    if repeated.any():
        log.warning(
            "%s: %d repeated asin records ignored (the first one is kept)",
            path,
            int(repeated.sum()),
        )
        items = items[~repeated]
    return items


def _records(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                try:
                    record = ast.literal_eval(line)
                except (ValueError, SyntaxError) as exc:
                    raise CatalogError(
                        f"{path}:{number}: neither JSON nor a python dict: {exc}"
                    ) from exc
            if not isinstance(record, dict) or "asin" not in record:
                raise CatalogError(
                    f"{path}:{number}: expected a record with an 'asin', got {line[:80]!r}"
                )
            yield record


def _item_row(record: dict[str, Any]) -> dict[str, str]:
    categories = record.get("categories") or [record.get("category") or []]
    flat = [name for path in categories for name in (path if isinstance(path, list) else [path])]
    description = record.get("description") or ""
    return {
        "item_id": str(record["asin"]).strip(),
        "title": _text(record.get("title")),
        "brand": _text(record.get("brand")),
        "categories": "|".join(
            dict.fromkeys(str(name).strip() for name in flat if str(name).strip())
        ),
        "description": " ".join(map(str, description))
        if isinstance(description, list)
        else str(description),
        "imUrl": _text(
            record.get("imUrl") or record.get("imageURLHighRes") or record.get("imageURL")
        ),
    }


def _text(value: Any) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return "" if value is None else str(value).strip()


def _image_path(root: Path, asin: str, url: str) -> str:
    """`images/<asin>.jpg`, else `images/<basename of imUrl>` if that file exists."""
    by_asin = f"images/{asin}.jpg"
    if url and not (root / by_asin).is_file():
        by_url = f"images/{url.rsplit('/', 1)[-1]}"
        if (root / by_url).is_file():
            return by_url
    return by_asin


def _read_interactions(root: Path, category: str | None) -> pd.DataFrame:
    if any(root.glob(f"ratings_{category or '*'}.csv")):
        path = _one_file(root, f"ratings_{category or '*'}.csv", "ratings")
        return read_csv(
            path,
            "ratings",
            names=RATING_COLUMNS,
            header=None,
            dtype={"user_id": str, "item_id": str},
        )
    path = _one_file(root, "*.inter", "interactions (ratings_<Category>.csv or <name>.inter)")
    inter = read_csv(path, "interactions", sep="\t", dtype={"userID": str, "itemID": str})
    missing = [column for column in INTER_COLUMNS if column not in inter.columns]
    if missing:
        raise CatalogError(f"{path}: missing column(s) {missing}; found {list(inter.columns)}")
    inter = inter.rename(columns=INTER_COLUMNS)
    for column, mapping_file, raw, internal in [
        ("item_id", "i_id_mapping.csv", "asin", "itemID"),
        ("user_id", "u_id_mapping.csv", "user_id", "userID"),
    ]:
        if (root / mapping_file).is_file():
            inter[column] = _unmap(inter[column], root / mapping_file, raw, internal)
    return inter


def _unmap(ids: pd.Series, mapping_file: Path, raw: str, internal: str) -> pd.Series:
    """MMRec's integer ids back to raw ids with its `<x>_id_mapping.csv` (TSV: raw, internal)."""
    mapping = read_csv(mapping_file, mapping_file.name, sep="\t", dtype=str)
    if {raw, internal} - set(mapping.columns):
        raise CatalogError(
            f"{mapping_file}: expected columns {[raw, internal]}, found {list(mapping.columns)}"
        )
    mapped = ids.map(dict(zip(mapping[internal].str.strip(), mapping[raw].str.strip())))
    if mapped.isna().any():
        examples = sorted(set(ids[mapped.isna()]))[:5]
        count = int(mapped.isna().sum())
        raise CatalogError(
            f"{mapping_file}: {count} interactions have ids it does not map, e.g. {examples}"
        )
    return mapped


def _one_file(root: Path, pattern: str, what: str) -> Path:
    found = sorted(path for path in root.glob(pattern) if path.is_file())
    if len(found) != 1:
        listing = [path.name for path in found] or "none"
        hint = "; pass category= to choose one" if len(found) > 1 else ""
        raise CatalogError(
            f"{root}: expected one {what} file matching {pattern!r}, found {listing}{hint}"
        )
    return found[0]
