"""cliper.views: view prompts, the Missing rule, the global prompt, long-text chunking."""

import re

import pytest
from pydantic import ValidationError

from cliper.views import GLOBAL_VIEW, ViewsConfig, ViewSpec, chunk_prompts, load_views

ROW = {
    "title": "Blue Mug",
    "brand": "Acme",
    "categories": "Kitchen|Mugs",
    "description": "A sturdy mug.",
}


@pytest.fixture
def products() -> ViewsConfig:
    return load_views("products")


def test_presets_put_global_last() -> None:
    for preset in ("products", "movies"):
        views = load_views(preset)
        assert views.view_names[-1] == GLOBAL_VIEW
        assert len(views.view_names) == len(views.views) + 1
        assert list(views.templates) == views.view_names


def test_prompts_one_per_view(products: ViewsConfig) -> None:
    assert products.prompts(ROW) == [
        "The product title is Blue Mug.",
        "The product brand is Acme.",
        "The product categories are Kitchen, Mugs.",
        "The product description is A sturdy mug..",
        "The product title is Blue Mug. The brand is Acme. The categories are Kitchen, Mugs. "
        "The description is A sturdy mug..",
    ]


@pytest.mark.parametrize("empty", ["", "   ", None, float("nan"), "N/A"])
def test_missing_field_becomes_missing_word(products: ViewsConfig, empty: object) -> None:
    prompts = products.prompts({**ROW, "brand": empty})
    assert prompts[1] == "The product brand is Missing."
    assert "The brand is Missing." in prompts[-1]


def test_absent_column_and_custom_missing_word() -> None:
    views = ViewsConfig(
        views=[ViewSpec(name="title", columns=["title"], template="Title: {}.")], missing="unknown"
    )
    assert views.prompts({}) == ["Title: unknown."]
    assert views.view_names == ["title"]  # no global template, no global view


def test_split_drops_empty_pieces(products: ViewsConfig) -> None:
    prompts = products.prompts({**ROW, "categories": " Kitchen || Mugs |"})
    assert prompts[2] == "The product categories are Kitchen, Mugs."


def test_view_reading_several_columns() -> None:
    movies = load_views("movies")
    row = {"title": "Heat", "genres": "Crime|Drama", "director": "Michael Mann", "actors": "", "plot": ""}
    prompts = movies.prompts(row)
    assert prompts[2] == "The movie is made by Michael Mann."
    assert prompts[3] == "The movie plot is Missing."


def test_global_prompt_fills_every_placeholder(products: ViewsConfig) -> None:
    values = {"title": "T1", "brand": "B2", "categories": "C3", "description": "D4"}
    prompt = products.prompts(values)[-1]
    assert all(value in prompt for value in values.values())
    assert not re.search(r"[{}]", prompt)
    for name, template in products.templates.items():
        fields = re.findall(r"{(\w*)}", template)
        assert fields == ([""] if name != GLOBAL_VIEW else [v.name for v in products.views])


def test_view_texts_pair_templates_with_values(products: ViewsConfig) -> None:
    pairs = products.view_texts(ROW)
    assert [template.format(value) for template, value in pairs] == products.prompts(ROW)
    assert pairs[-1][0] == "{}"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"views": []}, "at least one view"),
        ({"views": [{"name": "a", "columns": ["a"], "template": "{} {}"}]}, "exactly one"),
        ({"views": [{"name": "a", "columns": ["a"], "template": "{x}"}]}, "exactly one"),
        (
            {"views": [{"name": "a", "columns": ["a"], "template": "{}"}] * 2},
            "unique",
        ),
        (
            {"views": [{"name": "a", "columns": ["a"], "template": "{}"}], "global_template": "{b}"},
            "placeholders must be view names",
        ),
    ],
)
def test_invalid_configs_say_what_is_wrong(config: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ViewsConfig.model_validate(config)


def test_unknown_preset_or_file() -> None:
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        load_views("no-such-preset")


def words(text: str) -> int:
    """A stand-in tokenizer: one token per word plus start and end tokens."""
    return len(text.split()) + 2


def test_short_text_is_one_chunk() -> None:
    assert chunk_prompts("The plot is {}.", "short and sweet", words, 20, 8) == [
        "The plot is short and sweet."
    ]


def test_long_text_chunks_keep_the_prompt_and_fit() -> None:
    template = "The product description is {}."
    value = " ".join(f"w{i}" for i in range(100))
    chunks = chunk_prompts(template, value, words, 20, max_chunks=50)
    assert len(chunks) > 1
    assert all(chunk.startswith("The product description is ") and chunk.endswith(".") for chunk in chunks)
    assert all(words(chunk) <= 20 for chunk in chunks)
    # every word once, in order: 20 tokens - 2 special - 4 template words = 14 words a chunk
    pieces = [chunk[len("The product description is "):-1] for chunk in chunks]
    assert " ".join(pieces) == value
    assert [len(piece.split()) for piece in pieces] == [14] * 7 + [2]


def test_chunks_are_capped() -> None:
    value = " ".join(["word"] * 100)
    chunks = chunk_prompts("{}", value, words, 12, max_chunks=3)
    assert len(chunks) == 3 and all(words(chunk) == 12 for chunk in chunks)


def test_overlong_single_word_stays_one_chunk() -> None:
    chunks = chunk_prompts("{}", "x" * 50 + " tail", lambda text: len(text), 10, 8)
    assert chunks == ["x" * 50, "tail"]
