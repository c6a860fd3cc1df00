"""A bundle's per-item text fields (`item_fields.json`), read one row at a time.

The file is a JSON list with one item's object per line (`write_item_fields`):

    [
    {"title": "Blue mug", "brand": "Acme"},
    {"title": "Red mug"}
    ]

so it is plain JSON to any reader, and `ItemFieldRows.open` memory-maps it and only finds where
each line starts (one pass over the bytes, 8 bytes of offsets per item) instead of building a dict
and its strings for each of a million items in every worker process. A row is parsed when asked
for (`rows[i]`); `column` parses the rows in blocks, for a field's filter postings. A file in any
other layout (written by hand, or by an older writer on one line) is parsed whole and kept as a list.
"""

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

NEWLINE = ord("\n")
_BLOCK = 10_000  # rows parsed per json.loads by `column`
_SCAN = 1 << 26  # bytes searched for newlines at a time (a bool per byte)


class ItemFieldsError(ValueError):
    """An item fields file that is not a JSON list of objects of strings, one per item."""


def write_item_fields(path: Path, rows: Sequence[Mapping[str, str]]) -> None:
    """Write `rows` (one `{column: text}` per item; blank values left out) one per line."""
    lines = [json.dumps({name: value for name, value in row.items() if value}, ensure_ascii=False) for row in rows]
    text = "[\n" + ",\n".join(lines) + ("\n" if lines else "") + "]"
    with path.open("wb") as handle:
        handle.write(text.encode())


class ItemFieldRows(Sequence[dict[str, str]]):
    """Each item row's fields (`{column: text}`, blank ones left out), parsed on demand."""

    def __init__(self, data: np.ndarray | None, starts: np.ndarray | None, parsed: list[dict[str, str]] | None) -> None:
        """Either `data` (the file's bytes) and `starts` (where each row's line starts, and one past
        the last row's end), or `parsed` rows."""
        self._data = data
        self._starts = starts
        self._parsed = parsed

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, str]]) -> "ItemFieldRows":
        """`rows` itself if it is an `ItemFieldRows`, else rows held in memory."""
        return rows if isinstance(rows, ItemFieldRows) else cls(None, None, [_checked(row, i) for i, row in
                                                                             enumerate(rows)])

    @classmethod
    def open(cls, path: Path, n_items: int) -> "ItemFieldRows":
        """The fields of `n_items` items in `path`; `ItemFieldsError` when it does not hold them."""
        size = path.stat().st_size
        data = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray) if size else np.zeros(0, np.uint8)
        newlines = np.concatenate([np.flatnonzero(data[start : start + _SCAN] == NEWLINE) + start
                                   for start in range(0, max(size, 1), _SCAN)])
        one_per_line = (len(newlines) == n_items + 1 and bytes(data[:2]) == b"[\n"
                        and bytes(data[newlines[-1]:]) == b"\n]")
        if one_per_line:
            rows = cls(data, newlines + 1, None)
            if n_items:  # parse the ends, to fail early on a file that is no such list
                rows[0], rows[n_items - 1]
            return rows
        try:
            parsed = json.loads(bytes(data))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ItemFieldsError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(parsed, list):
            raise ItemFieldsError(f"{path}: expected a JSON list of objects of text fields, one per item")
        if len(parsed) != n_items:
            raise ItemFieldsError(f"{path}: {len(parsed)} entries, expected one per item ({n_items})")
        return cls.of(parsed)

    def __len__(self) -> int:
        return len(self._parsed) if self._parsed is not None else len(self._starts) - 1  # type: ignore[arg-type]

    def __getitem__(self, row: int) -> dict[str, str]:  # type: ignore[override]
        if self._parsed is not None:
            return dict(self._parsed[row])
        if not -len(self) <= row < len(self):
            raise IndexError(f"item row {row} out of range for {len(self)} items")
        return _checked(self._parse(row % len(self), row % len(self) + 1)[0], row)

    def __iter__(self) -> Iterator[dict[str, str]]:
        """Every row's fields, in row order (parsed a block of rows at a time)."""
        if self._parsed is not None:
            yield from (dict(row) for row in self._parsed)
            return
        for start in range(0, len(self), _BLOCK):
            for offset, row in enumerate(self._parse(start, min(start + _BLOCK, len(self)))):
                yield _checked(row, start + offset)

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same rows' fields (a list of dicts, another `ItemFieldRows`)."""
        if not isinstance(other, Sequence) or isinstance(other, str | bytes) or len(other) != len(self):
            return False
        return all(mine == theirs for mine, theirs in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # list-like equality, as list

    def column(self, name: str) -> Iterator[str]:
        """Every row's value of field `name` ("" where it has none), in row order."""
        return (row.get(name, "") for row in self)

    def _parse(self, start: int, stop: int) -> list:
        """Rows `start` to `stop` of the file, parsed in one go (their lines joined into a list)."""
        assert self._data is not None and self._starts is not None
        block = bytes(self._data[self._starts[start] : self._starts[stop] - 1]).rstrip(b",")
        try:
            return json.loads(b"[" + block + b"]")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ItemFieldsError(f"item fields of rows {start} to {stop - 1}: not valid JSON ({exc})") from exc


def _checked(row: object, position: int) -> dict[str, str]:
    if not isinstance(row, dict) or not all(isinstance(key, str) and isinstance(value, str)
                                            for key, value in row.items()):
        raise ItemFieldsError(f"item fields of row {position}: expected an object of text fields, got {row!r:.200}")
    return row
