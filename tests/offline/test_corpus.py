"""Caption corpus: loading, column mapping, "N/A" as missing, (image, caption) pairs."""

from pathlib import Path

import pandas as pd
import pytest

from offline.data.catalog import CatalogError
from offline.data.corpus import load_corpus

ML1M_CORPUS = Path("/work/shared/data/movielens1m_caption_corpus")


@pytest.fixture
def movie_corpus(tmp_path: Path) -> Path:
    rows = [
        {
            "movie_id": 1,
            "title": "Heat",
            "genre": "Action, Crime",
            "director": "Michael Mann",
            "actors": "Al Pacino",
            "plot": "A heist.",
            "image_path": "images/1.jpg",
        },
        {
            "movie_id": 2,
            "title": "Quiet",
            "genre": "N/A",
            "director": "N/A",
            "actors": "",
            "plot": "N/A",
            "image_path": "images/2.jpg",
        },
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "captions.csv", index=False)
    return tmp_path


def test_column_mapping_and_na_values(movie_corpus: Path) -> None:
    corpus = load_corpus(movie_corpus, views="movies", columns={"genres": "genre"})
    assert len(corpus) == 2
    assert corpus.captions.loc[1, "genres"] == "" and corpus.captions.loc[1, "plot"] == ""
    assert corpus.image_files()[0] == movie_corpus / "images" / "1.jpg"
    full, sparse = corpus.prompts()
    assert full[1] == "The movie genres are Action, Crime."
    assert len(full) == 5
    # views with no text are left out; the global prompt (last) is always kept
    assert sparse == [
        "The movie title is Quiet.",
        "The movie title is Quiet. The genres are Missing. It is made by Missing. "
        "The plot is Missing",
    ]


def test_pair_modes(movie_corpus: Path) -> None:
    corpus = load_corpus(movie_corpus, views="movies", columns={"genres": "genre"})
    assert len(corpus.pairs("all")) == 7
    global_pairs = corpus.pairs("global")
    assert [text.startswith("The movie title is Heat. The genres") for _, text in global_pairs] == [
        True,
        False,
    ]
    random_pairs = corpus.pairs("random", seed=3)
    assert random_pairs == corpus.pairs("random", seed=3)
    assert all(text in corpus.prompts()[i] for i, (_, text) in enumerate(random_pairs))
    with pytest.raises(ValueError, match="pair mode"):
        corpus.pairs("every")  # type: ignore[arg-type]


def test_unmapped_column_is_explained(movie_corpus: Path) -> None:
    with pytest.raises(
        CatalogError, match=r"missing column\(s\) \['genres'\] needed by views 'movies'"
    ):
        load_corpus(movie_corpus, views="movies")
    with pytest.raises(
        CatalogError, match=r"column mapping \{'genres': 'kind'\} names columns that do not exist"
    ):
        load_corpus(movie_corpus, views="movies", columns={"genres": "kind"})


def test_missing_captions_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="captions file not found"):
        load_corpus(tmp_path)


def test_synthetic_corpus_is_clean_and_disjoint(synth_world: Path) -> None:
    corpus = load_corpus(synth_world / "corpus")
    assert corpus.views.name == "products" and len(corpus) == 40
    assert all(len(prompts) == 5 for prompts in corpus.prompts())  # no missing field anywhere
    assert all(path.is_file() for path in corpus.image_files())
    catalog_ids = set(pd.read_csv(synth_world / "items.csv")["item_id"])
    assert not catalog_ids & set(corpus.captions["item_id"])


@pytest.mark.skipif(not ML1M_CORPUS.is_dir(), reason="real MovieLens-1M corpus not present")
def test_movielens_1m_corpus() -> None:
    corpus = load_corpus(ML1M_CORPUS, views="movies", columns={"genres": "genre"})
    assert len(corpus) == 1845
    assert (corpus.captions["plot"] == "N/A").sum() == 0
    assert corpus.image_files()[0].is_file()
