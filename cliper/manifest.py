"""The model bundle's manifest: what the service needs to know to use the bundle's files.

`manifest.json` records how the bundle was made (versions, backbone, fusion, CLIP identity),
how to turn an item into model inputs (views, chunking, image preprocessing, tokenizer) and a
sha256 of every other file. `cliper.bundle` writes and reads it; docs/architecture.md lists the
files it describes.
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from cliper.images import PreprocessConfig
from cliper.views import ViewsConfig

FORMAT_VERSION = 2
MANIFEST_FILE = "manifest.json"
# Fields `cliper.bundle.write_bundle` fills in itself; a caller never passes them.
GENERATED_FIELDS = ("format_version", "bundle_version", "created_at", "files")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# fusions whose view weights come from image agreement
ATTENTION_MODES = ("attention", "attention_calibrated", "attention_prior")


class FusionCandidate(_Strict):
    """One fusion that validation chose among, and its validation Recall@20."""

    mode: str
    tau: float | None = None
    alpha: float | None = None
    valid_recall_at_20: float


class Fusion(_Strict):
    """CLIPER fusion of the text views (baked into `item_tower.onnx`; recorded for humans).

    `alpha` mixes attention with uniform weights (`alpha * attention + (1 - alpha) / V`);
    `view_cosine_mean` and `view_cosine_std` (one per view) standardise the image-text cosines
    of `attention_calibrated`; `grid` lists the fusions validation chose this one among.
    """

    mode: str
    tau: float | None = None
    alpha: float | None = None
    view_cosine_mean: list[float] | None = None
    view_cosine_std: list[float] | None = None
    grid: list[FusionCandidate] | None = None

    @property
    def weighs_by_image(self) -> bool:
        """Whether an item's view weights say how well each view agrees with its image."""
        return self.mode in ATTENTION_MODES and self.alpha != 0


class Dims(_Strict):
    """Widths of the image features, text features and user/item vectors."""

    image: PositiveInt
    text: PositiveInt
    item: PositiveInt


class Chunking(_Strict):
    """Long view texts are cut into at most `max_chunks` prompts whose features are pooled."""

    max_chunks: PositiveInt = 1
    pooling: Literal["sum", "mean"] = "mean"


class TokenizerSpec(_Strict):
    """How to reproduce the offline tokenisation with the `tokenizers` package.

    The service cleans a prompt (`clean`, open_clip's cleaning functions: ftfy + HTML unescape,
    then `whitespace` collapses spaces, `lower` also lowercases, `canonicalize` also drops
    punctuation; `none` leaves the text alone), encodes it with `file` (whose post-processor adds
    the special tokens), truncates to `context_length` keeping the closing special token, and
    pads with `pad_id`. A prompt's token count for chunking is its length with special tokens
    and without truncation; a prompt fits when that count is <= `context_length`.
    """

    file: str = "tokenizer.json"
    context_length: PositiveInt
    pad_id: int = 0
    uses_attention_mask: bool = False
    clean: Literal["none", "whitespace", "lower", "canonicalize"] = "lower"


class IndexSpec(_Strict):
    """The FAISS factory string of `index.faiss`, its search parameters (a FAISS ParameterSpace
    string such as "nprobe=16"; applied on load) and its recall@50 against exact search."""

    factory: str = "Flat"
    search_params: str = ""
    metric: Literal["inner_product"] = "inner_product"
    recall_at_50: float | None = None


class Training(_Strict):
    """What the served vectors were trained on: every interaction (a refit, what the pipeline
    serves) or an evaluation split's training part; `metrics` then hold the evaluation."""

    data: Literal["all_interactions", "evaluation_split"]
    split: str = Field(description="the split's summary: method, users, items, interactions")
    epochs: PositiveInt


class Manifest(_Strict):
    """Contents of `manifest.json` (format version 2: version 1 plus the items' fields, CLIP
    embeddings, view weights, CLIP index and thumbnails, and the item tower's view weights)."""

    format_version: Literal[2]
    bundle_version: str = Field(description="<UTC timestamp>-<short hash of the files>")
    created_at: datetime
    git_commit: str | None = None
    backbone: str
    fusion: Fusion
    dims: Dims
    clip: dict[str, Any] = Field(description="CLIP identity: model name, pretrained tag, checkpoint hash")
    views: ViewsConfig
    chunking: Chunking = Chunking()
    preprocess: PreprocessConfig
    tokenizer: TokenizerSpec
    metrics: dict[str, float] = {}
    training: Training | None = None
    index: IndexSpec = IndexSpec()
    clip_index: IndexSpec = Field(IndexSpec(), description="the index of the items' CLIP search vectors")
    supports_cold_items: bool
    files: dict[str, str] = Field(description="relative path -> sha256 of every other bundle file")
