"""service.filters: parsing `field:value` filters and exclusion lists (422s that say what to fix),
and ItemFields' masks against a brute-force evaluation of the matching rule."""


import numpy as np
import pytest

from cliper.views import load_views
from service.errors import BadInput
from service.filters import MAX_EXCLUDE, MAX_FILTERS, FieldFilter, ItemFields, parse_exclude, parse_filters

VIEWS = load_views("products")  # title, brand, categories (a list field, split on "|"), description
COLUMNS = VIEWS.columns


@pytest.mark.parametrize(("raw", "message"), [
    (["brand"], "has no ':'; write it as field:value"),
    ([":acme"], "names no field before ':'"),
    (["  :acme"], "names no field before ':'"),
    (["brand:"], "has no value after ':'; write it as brand:value"),
    (["brand:   "], "has no value after ':'"),
    (["color:red"], "unknown field 'color'; this bundle's items have the fields title, brand, categories, description"),
    (["Brand:acme"], "unknown field 'Brand'"),
    (["brand:" + "x" * 201], "the value has 201 characters, at most 200"),
    (["brand:acme"] * (MAX_FILTERS + 1), f"{MAX_FILTERS + 1} filters given, at most {MAX_FILTERS}"),
])
def test_bad_filters_are_422s_that_say_what_to_fix(raw: list[str], message: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_filters(raw, COLUMNS)
    assert caught.value.status_code == 422
    assert message in caught.value.message


def test_filters_split_at_the_first_colon_and_are_stripped() -> None:
    raw = [" title : Mug: the sequel ", "brand:Acme", "categories:" + "x" * 200] + ["brand:a"] * (MAX_FILTERS - 3)
    filters = parse_filters(raw, COLUMNS)
    assert filters[:3] == [FieldFilter("title", "Mug: the sequel"), FieldFilter("brand", "Acme"),
                           FieldFilter("categories", "x" * 200)]
    assert len(filters) == MAX_FILTERS
    assert parse_filters([], COLUMNS) == []


def test_exclusion_lists() -> None:
    assert parse_exclude(["a,b", ",c,,", " d ", "a", ""]) == {"a", "b", "c", "d"}
    assert parse_exclude([]) == frozenset()
    ids = [f"item-{i}" for i in range(MAX_EXCLUDE)]
    assert len(parse_exclude([",".join(ids[:500]), ",".join(ids[400:])])) == MAX_EXCLUDE  # repeats count once
    with pytest.raises(BadInput) as caught:
        parse_exclude([",".join(ids), "one-more"])
    assert caught.value.status_code == 422
    assert f"{MAX_EXCLUDE + 1} item ids to exclude, at most {MAX_EXCLUDE}" in caught.value.message


def item(title: str = "", brand: str = "", categories: str = "", description: str = "") -> dict[str, str]:
    """An item's fields; those without a value are left out, as `ItemFields.get` leaves them."""
    fields = {"title": title, "brand": brand, "categories": categories, "description": description}
    return {name: value for name, value in fields.items() if value}


def rows_of(fields: ItemFields, *filters: tuple[str, str]) -> list[int]:
    mask = fields.matching([FieldFilter(field, value) for field, value in filters])
    assert mask is not None and mask.dtype == bool and len(mask) == fields.n_rows
    return np.flatnonzero(mask).tolist()


def test_matching_rule() -> None:
    fields = ItemFields(VIEWS, [
        item("Blue mug", " ACME ", "Kitchen | Mugs|Cups"),
        item("Red mug", "Acme Corp", "Kitchen|Mugs"),
        item("Kitchen|Mugs", "Straße", "Mugs & Cups"),
        item("", "", ""),
    ])
    assert fields.matching([]) is None
    assert rows_of(fields, ("brand", "acme")) == [0]  # a plain field equals the value as a whole
    assert rows_of(fields, ("brand", "ACME CORP")) == [1]
    assert rows_of(fields, ("brand", "STRASSE")) == [2]  # casefold, not lower
    assert rows_of(fields, ("categories", "mugs")) == [0, 1]  # a list field: one of its pieces
    assert rows_of(fields, ("categories", "CUPS")) == [0]
    assert rows_of(fields, ("categories", "mugs & cups")) == [2]
    assert rows_of(fields, ("categories", "kitchen|mugs")) == []  # never the whole list
    assert rows_of(fields, ("title", "kitchen|mugs")) == [2]  # the title is no list field
    assert rows_of(fields, ("title", "mugs")) == []
    assert rows_of(fields, ("categories", "kitchen"), ("brand", "acme corp")) == [1]  # ANDed
    assert rows_of(fields, ("categories", "kitchen"), ("brand", "nobody")) == []
    assert fields.get(0) == item("Blue mug", " ACME ", "Kitchen | Mugs|Cups")


def test_masks_equal_a_brute_force_evaluation_while_rows_are_added() -> None:
    """Postings of a field built before rows were added, after, and never: all answer alike."""
    rng = np.random.default_rng(3)
    brands = ["Acme", "acme ", "Globex", "Initech", ""]
    categories = ["Kitchen", "Mugs", "Cups", "Garden", "Tools"]

    def random_item() -> dict[str, str]:
        picks = rng.choice(categories, size=rng.integers(0, 4), replace=False)
        spaced = [f" {c.upper()} " if rng.random() < 0.3 else c for c in picks]
        return item(f"title {rng.integers(50)}", str(rng.choice(brands)), "|".join(spaced), "text " * 5)

    def matches(row: dict[str, str], field: str, value: str) -> bool:
        if field == "categories":
            return value.casefold() in [piece.strip().casefold() for piece in row.get(field, "").split("|")]
        return row.get(field, "").strip().casefold() == value.casefold()

    queries = [[("brand", "ACME")], [("categories", "mugs")], [("categories", "cups"), ("brand", "globex")],
               [("title", "Title 7")], [("categories", "garden"), ("categories", "tools")]]
    truth = [random_item() for _ in range(2000)]
    fields = ItemFields(VIEWS, truth)
    for step in range(len(queries) + 1):
        for _ in range(100):  # rows added after the postings of queries[:step] were built
            truth.append(random_item())
            fields.put(len(truth) - 1, truth[-1])
        for query in queries[:step]:
            expected = [row for row, values in enumerate(truth) if all(matches(values, *f) for f in query)]
            assert expected and rows_of(fields, *query) == expected
    assert set(fields._postings) == {"brand", "categories", "title"}  # never a posting of the description
    assert [fields.get(row) for row in range(len(truth))] == truth


def test_postings_of_100000_rows_match_a_scan_and_are_built_once_per_field(monkeypatch) -> None:
    """Correctness at a catalog's size, and the build counted rather than timed (speed belongs
    to benchmarks): each field's postings are built at its first filter, then only looked up."""
    import service.filters

    built = []
    real = service.filters._Postings
    monkeypatch.setattr(service.filters, "_Postings", lambda keys: built.append(len(keys)) or real(keys))
    rng = np.random.default_rng(0)
    rows = [item(f"product {i}", f"brand {i % 5000}", "|".join(f"cat {c}" for c in rng.integers(0, 300, 3)))
            for i in range(100_000)]
    fields = ItemFields(VIEWS, rows)
    assert rows_of(fields, ("brand", "Brand 42")) == list(range(42, 100_000, 5000))
    assert rows_of(fields, ("title", "product 99999")) == [99_999]
    assert rows_of(fields, ("categories", "cat 7")) == [
        row for row, values in enumerate(rows) if "cat 7" in values["categories"].split("|")]
    both = rows_of(fields, ("brand", "brand 1"), ("categories", "cat 1"))
    assert both == [row for row in range(1, 100_000, 5000) if "cat 1" in rows[row]["categories"].split("|")]
    assert built == [100_000, 100_000, 100_000]  # brand, title, categories: none built twice


def test_ingested_fields_survive_a_snapshot() -> None:
    bundle = [item(f"t{i}", "Acme" if i % 2 else "Globex", "Kitchen|Mugs") for i in range(10)]
    fields = ItemFields(VIEWS, bundle)
    assert rows_of(fields, ("brand", "acme")) == [1, 3, 5, 7, 9]
    added = [item("new", "Acme", "Garden"), {"title": "partial", "brand": "Initech"}, item("t1", "Acme", "Mugs")]
    for row, values in enumerate(added, start=10):
        fields.put(row, values)
    state = fields.ingested_state()
    assert state == {10: added[0], 11: item("partial", "Initech"), 12: added[2]}

    restored = ItemFields(VIEWS, bundle, ingested=state)
    assert restored.n_rows == fields.n_rows == 13
    assert [restored.get(row) for row in range(13)] == [fields.get(row) for row in range(13)]
    for query in [[("brand", "acme")], [("categories", "mugs")], [("brand", "initech")], [("title", "t1")]]:
        assert rows_of(restored, *query) == rows_of(fields, *query)
    restored.put(13, item("later", "Acme"))
    assert rows_of(restored, ("brand", "acme")) == [1, 3, 5, 7, 9, 10, 12, 13]
    assert restored.ingested_state() == {**state, 13: item("later", "Acme")}


def test_rows_only_grow_one_at_a_time() -> None:
    fields = ItemFields(VIEWS, [item("a")])
    with pytest.raises(ValueError, match="row 2 put, expected the next row 1"):
        fields.put(2, item("b"))
    with pytest.raises(ValueError, match="row 0 put, expected the next row 1"):
        fields.put(0, item("b"))
    with pytest.raises(ValueError, match="expected the next row 1"):  # a snapshot with a gap
        ItemFields(VIEWS, [item("a")], ingested={2: item("c")})
