"""cliper.ids.IdMap and cliper.item_fields.ItemFieldRows: a bundle's ids and item fields read from
disk without a Python object per entry, checked against plain lists and dicts."""

import json
from pathlib import Path

import numpy as np
import pytest

from cliper.ids import IdError, IdMap, order_path, write_ids
from cliper.item_fields import ItemFieldRows, ItemFieldsError, write_item_fields


def random_ids(n: int, seed: int = 0) -> list[str]:
    """Unique ids of mixed lengths and scripts, in no particular order."""
    rng = np.random.default_rng(seed)
    alphabet = list("abcXYZ019-_:/ é中😀")
    ids = {"".join(rng.choice(alphabet, rng.integers(1, 12))) for _ in range(n)}
    return sorted(ids, key=lambda _: rng.random())


def test_rows_and_ids_round_trip_through_the_files(tmp_path: Path) -> None:
    ids = random_ids(3000)
    write_ids(tmp_path / "item_ids.npy", ids)
    assert order_path(tmp_path / "item_ids.npy").name == "item_ids_order.npy"
    loaded = IdMap.load(tmp_path / "item_ids.npy")
    truth = {item_id: row for row, item_id in enumerate(ids)}
    assert len(loaded) == len(ids) and list(loaded) == ids and loaded[5:9] == ids[5:9]
    assert all(loaded[row] == item_id for row, item_id in enumerate(ids))
    assert loaded.ids_of(np.array([9, 0, 9, len(ids) - 1])) == [ids[9], ids[0], ids[9], ids[-1]]
    assert all(loaded.row(item_id) == row for item_id, row in truth.items())
    assert loaded == ids and loaded != ids[::-1] and loaded != ids[:-1] and loaded == IdMap.of(ids)
    assert loaded + ["extra"] == [*ids, "extra"]
    assert loaded.index(ids[42]) == 42 and ids[7] in loaded and loaded.count(ids[7]) == 1


def test_ids_that_are_not_there(tmp_path: Path) -> None:
    ids = ["apple", "apricot", "banana", "é"]
    loaded = write_ids(tmp_path / "ids.npy", ids)
    absent = ["", "app", "apples", "apricots", "a" * 40, "banana\0", "zzz", "\0", "\ud800", "E", "appl"]
    assert [loaded.row(item_id) for item_id in absent] == [None] * len(absent)
    probes = ["banana", *absent, "apple", "é"]
    assert loaded.rows(probes) == [2] + [-1] * len(absent) + [0, 3]
    assert loaded.rows([]) == []
    assert "app" not in loaded and 3 not in loaded
    with pytest.raises(ValueError, match="is not in the ids"):
        loaded.index("app")


def test_many_rows_at_once_match_a_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cliper.ids.ROWS_CACHED", 500)  # the memo fills and empties along the way
    ids = random_ids(5000, seed=1)
    id_map = IdMap.of(ids)
    probes = random_ids(2000, seed=2)
    truth = {item_id: row for row, item_id in enumerate(ids)}
    expected = [truth.get(item_id, -1) for item_id in probes]
    for _ in range(2):  # the second time, some of them remembered
        assert id_map.rows(probes) == expected
        assert [id_map.row(item_id) for item_id in probes[::-1]] == [None if row < 0 else row for row in expected[::-1]]
        assert id_map.rows(probes[:300]) == expected[:300]
    assert sum(item_id in truth for item_id in probes) > 100  # the probes do hit


def test_bad_ids_are_refused() -> None:
    for bad, message in [(["a", "b", "a"], "not unique: 'a' is repeated"), (["a", ""], "non-empty string"),
                         (["a\0b"], "without NUL"), (["a", 3], "non-empty string")]:
        with pytest.raises(IdError, match=message):
            IdMap.of(bad)  # type: ignore[arg-type]


def test_no_ids() -> None:
    empty = IdMap.of([])
    assert len(empty) == 0 and list(empty) == [] and empty.row("a") is None and empty.rows(["a"]) == [-1]
    assert empty == []


FIELDS = [{"title": "Blue mug", "brand": "Acme"}, {"title": "Tea, \"green\"\nloose", "brand": ""},
          {}, {"title": "Ünïcödé 中文 😀", "categories": "a|b"}]
KEPT = [{key: value for key, value in row.items() if value} for row in FIELDS]


def test_item_fields_one_row_per_line(tmp_path: Path) -> None:
    path = tmp_path / "item_fields.json"
    write_item_fields(path, FIELDS)
    assert json.loads(path.read_text()) == KEPT  # plain JSON to any reader
    assert path.read_text().count("\n") == len(FIELDS) + 1
    rows = ItemFieldRows.open(path, len(FIELDS))
    assert rows._parsed is None  # read on demand, not parsed
    assert len(rows) == 4 and [rows[i] for i in range(4)] == KEPT and rows[-1] == KEPT[-1]
    assert rows == KEPT and list(rows) == KEPT and rows != KEPT[:3] and rows != [*KEPT[:3], {"title": "other"}]
    assert list(rows.column("title")) == ["Blue mug", "Tea, \"green\"\nloose", "", "Ünïcödé 中文 😀"]
    with pytest.raises(IndexError):
        rows[4]


def test_item_fields_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cliper.item_fields._BLOCK", 3)
    many = [{"brand": f"brand {i}"} if i % 4 else {} for i in range(20)]
    write_item_fields(tmp_path / "f.json", many)
    rows = ItemFieldRows.open(tmp_path / "f.json", 20)
    assert list(rows.column("brand")) == [row.get("brand", "") for row in many]


def test_item_fields_in_another_layout_are_parsed_whole(tmp_path: Path) -> None:
    path = tmp_path / "item_fields.json"
    path.write_text(json.dumps(KEPT))  # one line
    rows = ItemFieldRows.open(path, len(KEPT))
    assert [rows[i] for i in range(4)] == KEPT and list(rows.column("brand")) == ["Acme", "", "", ""]
    write_item_fields(path, [])
    assert len(ItemFieldRows.open(path, 0)) == 0


@pytest.mark.parametrize(("text", "message"), [
    ("[\n{\"title\": 3},\n{}\n]", "row 0: expected an object of text fields"),
    ("[\n{\"title\": \"a\"},\n[1]\n]", "row 1: expected an object of text fields"),
    ("{\"title\": \"a\"}", "expected a JSON list"),
    ("[{\"title\": \"a\"}]", r"1 entries, expected one per item \(2\)"),
    ("[\n{\"title\": \"a\"},\n{\"title\": \n]", "not valid JSON"),
])
def test_bad_item_fields_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "item_fields.json"
    path.write_text(text)
    with pytest.raises(ItemFieldsError, match=message):
        ItemFieldRows.open(path, 2)
