"""Caption corpus: `captions.csv` (an `image_path` column plus text columns) and its images.

It trains the stand-in "pretrained" CLIP on items that are NOT in the recommendation catalog.
Each image's captions are its view prompts (global included), built by the same `ViewsConfig`
as the catalog features, so CLIP learns the prompt wording it will see at feature time.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cliper.views import ViewsConfig
from offline.data.catalog import IMAGE_COLUMN, CatalogError, read_csv, resolve_views

CAPTIONS_FILE = "captions.csv"
DEFAULT_NA_VALUES = ("N/A",)
PairMode = Literal["all", "global", "random"]


@dataclass
class CaptionCorpus:
    """Rows of `captions` (text as str, "" for missing) with their images under `root`."""

    root: Path
    captions: pd.DataFrame
    views: ViewsConfig

    def __len__(self) -> int:
        return len(self.captions)

    def image_files(self) -> list[Path]:
        return [self.root / relative for relative in self.captions[IMAGE_COLUMN]]

    def prompts(self) -> list[list[str]]:
        """Per image, the prompts of the views that have text (global last, always kept).

        A view whose fields are all empty is left out: "The brand is Missing." says nothing
        about the image, so training on it would only add noise.
        """
        views = self.views
        result = []
        for row in self.captions.to_dict("records"):
            values = views.values(row)
            prompts = [
                view.prompt(values[view.name])
                for view in views.views
                if values[view.name] != views.missing
            ]
            if views.global_template is not None:
                prompts.append(views.global_template.format(**values))
            result.append(prompts or views.prompts(row))  # no text at all: keep the "Missing" ones
        return result

    def pairs(self, mode: PairMode = "all", seed: int = 0) -> list[tuple[Path, str]]:
        """(image file, caption) pairs.

        `all`: one pair per image and view prompt; `global`: the global prompt only (the last
        view when there is no global template); `random`: one seeded random prompt per image.
        """
        images = self.image_files()
        prompts = self.prompts()
        if mode == "all":
            return [(image, text) for image, texts in zip(images, prompts) for text in texts]
        if mode == "global":
            return [(image, texts[-1]) for image, texts in zip(images, prompts)]
        if mode == "random":
            rng = np.random.default_rng(seed)
            return [
                (image, texts[rng.integers(len(texts))]) for image, texts in zip(images, prompts)
            ]
        raise ValueError(f"pair mode must be 'all', 'global' or 'random', got {mode!r}")


def load_corpus(
    root: Path,
    views: ViewsConfig | str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    na_values: Sequence[str] = DEFAULT_NA_VALUES,
) -> CaptionCorpus:
    """Load a caption corpus folder.

    `columns` maps a view's column name to the corpus column that holds it, e.g.
    `{"genres": "genre"}` for the MovieLens-1M corpus read with the `movies` views. Cells equal
    to one of `na_values` count as missing.
    """
    root = Path(root)
    views = resolve_views(root, views)
    frame = read_csv(
        root / CAPTIONS_FILE,
        "captions",
        dtype=str,
        keep_default_na=False,
        na_values=list(na_values),
    )
    renames = dict(columns or {})
    absent = {
        view_col: source for view_col, source in renames.items() if source not in frame.columns
    }
    if absent:
        raise CatalogError(
            f"{root / CAPTIONS_FILE}: column mapping {absent} names columns that do not exist; "
            f"found {list(frame.columns)}"
        )
    frame = frame.rename(columns={source: view_col for view_col, source in renames.items()})
    frame = frame.fillna("").astype(str)
    needed = [IMAGE_COLUMN, *views.columns]
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise CatalogError(
            f"{root / CAPTIONS_FILE}: missing column(s) {missing} needed by views {views.name!r}; "
            f"found {list(frame.columns)}. Map them with columns={{view_column: corpus_column}}."
        )
    no_image = frame[IMAGE_COLUMN].str.strip() == ""
    if no_image.any():
        raise CatalogError(
            f"{root / CAPTIONS_FILE}: {int(no_image.sum())} row(s) have no image_path"
        )
    return CaptionCorpus(root, frame.reset_index(drop=True), views)
