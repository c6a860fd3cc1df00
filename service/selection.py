"""Which items an answer may hold: field filters and excluded ids, as rows of the catalog.

Recommendations, similar items and search take the same `filter` and `exclude` parameters
(`service.filters` parses them); a `Selection` turns them into what `ItemIndex.search_filtered`
takes: a mask of the rows that pass the filters (None without filters) and the rows to leave out.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from service.catalog import ItemCatalog
from service.filters import FieldFilter, parse_exclude, parse_filters


@dataclass(frozen=True)
class Selection:
    filters: tuple[FieldFilter, ...] = ()
    exclude: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, filters: Sequence[str], exclude: Sequence[str], columns: Sequence[str]) -> "Selection":
        """From the request's `filter` and `exclude` values; `BadInput` (422) when malformed."""
        if not filters and not exclude:
            return EVERYTHING
        return cls(tuple(parse_filters(filters, columns)), parse_exclude(exclude))

    @property
    def everything(self) -> bool:
        return not self.filters and not self.exclude

    def allowed(self, catalog: ItemCatalog) -> np.ndarray | None:
        """The rows that pass the filters, or None without filters."""
        return catalog.fields.matching(self.filters) if self.filters else None

    def excluded_rows(self, catalog: ItemCatalog, also: Iterable[str] = ()) -> set[int]:
        """The live rows of the excluded items and of `also` (e.g. the user's seen items)."""
        rows = catalog.items.rows_of(self.exclude)
        rows |= catalog.items.rows_of(also)
        return rows


EVERYTHING = Selection()
