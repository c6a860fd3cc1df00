"""Compact string ids: row -> id and id -> row without one Python object per id.

A bundle names its users and items by string ids, one per row. At 10^7 users a dict of id -> row
and a list of the ids cost about 1.5 GB of Python objects in every worker process and half a
minute to build. Instead `write_ids` stores two arrays, which `IdMap` memory-maps (`np.load`
with `mmap_mode="r"`, so all processes of a host share one copy through the page cache and
opening them costs nothing):

- `<name>.npy`: the ids in row order as fixed-width UTF-8 bytes (numpy `S<w>`, `w` the longest
  id's length in bytes; shorter ids are padded with NUL bytes, so an id may not contain one);
- `<name>_order.npy`: the rows sorted by their ids' bytes (int64, numpy's `intp`, which
  `np.searchsorted` takes as its `sorter` without a copy).

`ids[row]` decodes one entry; `row(id)` is a binary search through the order (about 20 probes at
10^7 ids: 5 to 10 microseconds, most of it numpy's call overhead); `rows(ids)` looks many up in
one numpy call. The rows of the last `ROWS_CACHED` ids looked up are remembered (a request looks
its user, and its user's seen items, up more than once). 10^7 ids of 12 bytes take 120 MB + 80 MB
on disk.
"""

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np

ORDER_SUFFIX = "_order"
ROWS_CACHED = 16_384  # ids whose row (or absence) is remembered; the memo is emptied when full
_CHUNK = 65_536  # ids decoded per numpy call when iterating


class IdError(ValueError):
    """Ids that cannot be stored: empty, not strings, containing NUL, or repeated."""


def order_path(ids_path: Path) -> Path:
    """The file of the sort order that goes with the ids file `ids_path` (`user_ids.npy` -> `user_ids_order.npy`)."""
    return ids_path.with_name(ids_path.stem + ORDER_SUFFIX + ids_path.suffix)


class IdMap(Sequence[str]):
    """Ids by row and rows by id over two arrays (module docstring): `ids` (`S<w>`, row order)
    and `order` (int64, the rows sorted by id)."""

    def __init__(self, ids: np.ndarray, order: np.ndarray) -> None:
        if ids.ndim != 1 or ids.dtype.kind != "S" or order.shape != ids.shape or order.dtype != np.intp:
            raise IdError(f"ids must be a 1-D bytes array and order an int64 array of the same length; got "
                          f"{ids.dtype}{ids.shape} and {order.dtype}{order.shape}")
        self._ids = ids
        self._order = order
        self._width = ids.dtype.itemsize
        self._memo: dict[str, int] = {}  # id -> row, -1 for none

    @classmethod
    def of(cls, ids: Iterable[str]) -> "IdMap":
        """`ids` itself if it is an `IdMap`, else an in-memory map of them (checked like `write_ids`)."""
        if isinstance(ids, IdMap):
            return ids
        encoded = _encode(ids)
        order = np.argsort(encoded, kind="stable").astype(np.intp)
        ordered = encoded[order]
        if len(ordered) > 1 and (repeated := np.flatnonzero(ordered[1:] == ordered[:-1])).size:
            raise IdError(f"ids are not unique: {ordered[repeated[0]].decode()!r} is repeated")
        return cls(encoded, order)

    @classmethod
    def load(cls, ids_path: Path) -> "IdMap":
        """The ids written by `write_ids` to `ids_path`, memory-mapped."""
        ids = np.load(ids_path, mmap_mode="r", allow_pickle=False)
        order = np.load(order_path(ids_path), mmap_mode="r", allow_pickle=False)
        # plain ndarray views of the maps: numpy's memmap subclass costs ~1 us per scalar read
        return cls(ids.view(np.ndarray), order.view(np.ndarray))

    def save(self, ids_path: Path) -> None:
        """Write the two arrays: `ids_path` and its `order_path`."""
        for path, array in ((ids_path, self._ids), (order_path(ids_path), self._order)):
            with path.open("wb") as handle:
                np.save(handle, array, allow_pickle=False)

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, row: int) -> str: ...

    @overload
    def __getitem__(self, row: slice) -> list[str]: ...

    def __getitem__(self, row: int | slice) -> str | list[str]:
        if isinstance(row, slice):
            return [value.decode() for value in self._ids[row].tolist()]
        return self._ids[row].decode()

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self._ids), _CHUNK):
            yield from (value.decode() for value in self._ids[start : start + _CHUNK].tolist())

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and self.row(item_id) is not None

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same ids in the same order (a list of str, another map)."""
        if isinstance(other, IdMap):
            return np.array_equal(self._ids, other._ids)
        if not isinstance(other, Sequence) or isinstance(other, str | bytes) or len(other) != len(self):
            return False
        try:
            return bool(np.array_equal(self._ids, _encode(other)))
        except (IdError, UnicodeError):
            return False

    __hash__ = None  # type: ignore[assignment]  # mutable-sequence-like equality, as list

    def __add__(self, other: Sequence[str]) -> list[str]:
        """The ids followed by `other`'s, as a list (what `list + list` gives)."""
        return [*self, *other]

    def index(self, item_id: object, start: int = 0, stop: int | None = None) -> int:
        """The row of `item_id` (`list.index`'s contract: ValueError when absent)."""
        row = self.row(item_id) if isinstance(item_id, str) else None
        if row is None or not start <= row < (len(self) if stop is None else stop):
            raise ValueError(f"{item_id!r} is not in the ids")
        return row

    def count(self, item_id: object) -> int:
        return int(item_id in self)

    def row(self, item_id: str) -> int | None:
        """The row of `item_id`, or None."""
        row = self._memo.get(item_id)
        if row is None:
            row = int(self._search([item_id])[0])
            self._remember(item_id, row)
        return None if row < 0 else row

    def ids_of(self, rows: np.ndarray) -> list[str]:
        """The ids of `rows` (an int array), in one numpy call."""
        return [value.decode() for value in self._ids[rows].tolist()]

    def rows(self, item_ids: Sequence[str]) -> list[int]:
        """The row of each of `item_ids`, -1 where it is not one of the ids."""
        memo = self._memo
        found = [memo.get(item_id, -2) for item_id in item_ids]
        unknown = [i for i, row in enumerate(found) if row == -2]
        if unknown:
            missing = [item_ids[i] for i in unknown]
            for i, item_id, row in zip(unknown, missing, self._search(missing).tolist(), strict=True):
                found[i] = row
                self._remember(item_id, row)
        return found

    def _search(self, item_ids: Sequence[str]) -> np.ndarray:
        """`rows` by binary search through the order."""
        keys = [self._key(item_id) for item_id in item_ids]
        found = np.full(len(keys), -1, dtype=np.int64)
        usable = [i for i, key in enumerate(keys) if key is not None]
        if not usable or not len(self._ids):
            return found
        # the keys as an array of the ids' own dtype: numpy then compares in place, never converting the ids
        wanted = np.array([keys[i] for i in usable], dtype=self._ids.dtype)
        positions = np.minimum(np.searchsorted(self._ids, wanted, sorter=self._order), len(self._ids) - 1)
        rows = self._order[positions]
        found[usable] = np.where(self._ids[rows] == wanted, rows, -1)
        return found

    def _remember(self, item_id: str, row: int) -> None:
        if len(self._memo) >= ROWS_CACHED:
            self._memo.clear()
        self._memo[item_id] = row

    def _key(self, item_id: str) -> bytes | None:
        """`item_id` as stored, or None when no stored id can equal it (too long, or with NUL)."""
        try:
            key = item_id.encode()
        except UnicodeEncodeError:  # a lone surrogate: no stored id has one
            return None
        return None if len(key) > self._width or b"\0" in key or not key else key


def write_ids(ids_path: Path, ids: Iterable[str]) -> IdMap:
    """Check `ids` (non-empty str without NUL, unique) and write them as `ids_path` and its order."""
    id_map = IdMap.of(ids)
    id_map.save(ids_path)
    return id_map


def _encode(ids: Iterable[str]) -> np.ndarray:
    """UTF-8 bytes of `ids` as one `S<w>` array; `IdError` for an empty, non-str or NUL id."""
    ids = list(ids)
    for position, item_id in enumerate(ids):
        if not isinstance(item_id, str) or not item_id or "\0" in item_id:
            raise IdError(f"id #{position} {item_id!r}: every id must be a non-empty string without NUL")
    encoded = [item_id.encode() for item_id in ids]
    return np.array(encoded, dtype=f"S{max(map(len, encoded), default=1)}")
