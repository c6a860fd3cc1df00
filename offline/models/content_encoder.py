"""The content encoder of multi-modal backbones: frozen CLIP features -> the backbone's modalities.

`content_mode` picks the text fusion (`attention`, `attention_calibrated`, `attention_prior`,
`mean`, `sum`, `concat`, `mlp`, `global`; see `offline.fusion`) or `image` for image features
only. A backbone sees its content as a list of modalities: `[image]` or `[image, fused text]`.
"""

from typing import Literal, get_args

from torch import Tensor, nn

from cliper.views import GLOBAL_VIEW
from offline.fusion import ViewFusion

ContentMode = Literal[
    "none", "image", "global", "mean", "sum", "concat", "mlp", "attention", "attention_calibrated", "attention_prior"
]
CONTENT_MODES: tuple[str, ...] = get_args(ContentMode)
ID_ONLY = "none"
MULTIMODAL_MODES = tuple(mode for mode in CONTENT_MODES if mode != ID_ONLY)
# fusions that sum weighted views
WEIGHTED_MODES = ("attention", "attention_calibrated", "attention_prior", "mean", "sum")


class ContentEncoder(nn.Module):
    """Turn `image (B, Di)` and `text_views (B, V, Dt)` into the modality list of a backbone."""

    def __init__(
        self, mode: str, views: tuple[str, ...], image_dim: int, text_dim: int, tau: float, alpha: float = 1.0
    ):
        super().__init__()
        if mode not in MULTIMODAL_MODES:
            raise ValueError(f"content_mode {mode!r} is not multi-modal; choose one of {MULTIMODAL_MODES}")
        if mode == "global" and views[-1] != GLOBAL_VIEW:
            raise ValueError(f"content_mode 'global' needs a last view named {GLOBAL_VIEW!r}; views are {views}")
        self.mode = mode
        self.image_dim = image_dim
        self.fusion = None if mode == "image" else ViewFusion(mode, len(views), text_dim, image_dim, tau, alpha)

    @property
    def learned(self) -> bool:
        """Whether the modalities depend on trained parameters (an `mlp` fusion)."""
        return self.fusion is not None and self.fusion.learned

    @property
    def modality_dims(self) -> list[int]:
        return [self.image_dim] if self.fusion is None else [self.image_dim, self.fusion.out_dim]

    def forward(self, image: Tensor, text_views: Tensor) -> list[Tensor]:
        if self.fusion is None:
            return [image]
        return [image, self.fusion(text_views, image)]

    @property
    def weighs_views(self) -> bool:
        """Whether the text is a weighted sum of the views (`attention`, `mean`, `sum`)."""
        return self.fusion is not None and self.fusion.mode in WEIGHTED_MODES

    @property
    def map_dims(self) -> list[int]:
        """Sizes of the `map_input` modalities."""
        if not self.weighs_views:
            return self.modality_dims
        return [self.image_dim, self.fusion.n_views * self.fusion.text_dim]

    def map_input(self, image: Tensor, text_views: Tensor) -> list[Tensor]:
        """What the cold-start map reads: the modalities, except that a weighted sum of views
        is replaced by the weighted views side by side, `[w_1 x_1, ..., w_V x_V]`.

        A linear map of the sum `sum_v w_v x_v` must read every view through one shared matrix;
        side by side, each view gets its own coefficients while the fusion's weights (CLIPER's
        per-item attention) still silence the views that contradict the image. On ML-100K this
        lifted FREEDOM + attention's cold Recall@20 from 0.053 to 0.086 among all items and from
        0.235 to 0.247 among cold items (one seed; 3 seeds: 0.085, 0.253). For `mean` this is
        `concat` scaled by 1/V, which the scale-free ridge penalty maps identically.
        """
        if not self.weighs_views:
            return self(image, text_views)
        weights = self.fusion.view_weights(text_views, image)
        return [image, (weights.unsqueeze(-1) * text_views).flatten(1)]

    def graph_features(self, image: Tensor, text_views: Tensor) -> list[Tensor]:
        """Modalities for item-item graphs: the fused ones, except that an `mlp` fusion (a
        random projection before training) is replaced by the mean of the views."""
        if self.fusion is not None and self.fusion.mlp is not None:
            return [image, text_views.mean(dim=1)]
        return self(image, text_views)

    @property
    def graph_follows_training(self) -> bool:
        """Whether `graph_features` change in training (a learned view prior), so graphs
        built from them must be rebuilt as it learns."""
        return self.fusion is not None and self.fusion.prior is not None
