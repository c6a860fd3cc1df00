"""The content side of multi-modal backbones: frozen CLIP features, the CLIPER fusion, and the
base class whose cold items are embedded from content alone.

`content_mode` picks the text fusion (`attention`, `mean`, `sum`, `concat`, `mlp`, `global`)
or `image` for image features only. A backbone sees its content as a list of modalities:
`[image]` or `[image, fused text]`.
"""

from abc import abstractmethod
from typing import Literal, get_args

import torch
from pydantic import Field
from torch import Tensor, nn

from cliper.views import GLOBAL_VIEW
from offline.fusion import ViewFusion
from offline.models.base import InteractionGraph, Recommender
from offline.models.features import ContentFeatures
from offline.models.hparams import HParams

ContentMode = Literal["none", "image", "global", "mean", "sum", "concat", "mlp", "attention"]
CONTENT_MODES: tuple[str, ...] = get_args(ContentMode)
ID_ONLY = "none"
MULTIMODAL_MODES = tuple(mode for mode in CONTENT_MODES if mode != ID_ONLY)


class ContentEncoder(nn.Module):
    """Turn `image (B, Di)` and `text_views (B, V, Dt)` into the modality list of a backbone."""

    def __init__(self, mode: str, views: tuple[str, ...], image_dim: int, text_dim: int, tau: float):
        super().__init__()
        if mode not in MULTIMODAL_MODES:
            raise ValueError(f"content_mode {mode!r} is not multi-modal; choose one of {MULTIMODAL_MODES}")
        if mode == "global" and views[-1] != GLOBAL_VIEW:
            raise ValueError(f"content_mode 'global' needs a last view named {GLOBAL_VIEW!r}; views are {views}")
        self.mode = mode
        self.image_dim = image_dim
        self.fusion = None if mode == "image" else ViewFusion(mode, len(views), text_dim, image_dim, tau)

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

    def frozen_features(self, image: Tensor, text_views: Tensor) -> list[Tensor]:
        """Modalities without trained parameters, for graphs fixed before training: a learned
        (`mlp`) fusion is replaced by the mean of the views."""
        if not self.learned:
            return self(image, text_views)
        return [image, text_views.mean(dim=1)]


class ContentParams(HParams):
    """Hyper-parameters of every multi-modal backbone."""

    cold_ridge: float = Field(
        gt=0, description="ridge strength of the content -> ID-half map, relative to the features' energy"
    )


def ridge_regression(x: Tensor, y: Tensor, strength: float) -> tuple[Tensor, Tensor]:
    """`(weight, bias)` minimising |x W + b - y|^2 + penalty |W|^2, with penalty = `strength`
    times the mean centred feature energy (so it does not depend on the features' scale).
    Solved in float64, in the dual form when there are fewer rows than features."""
    x, y = x.double(), y.double()
    x_mean, y_mean = x.mean(dim=0), y.mean(dim=0)
    xc, yc = x - x_mean, y - y_mean
    penalty = strength * xc.pow(2).sum(dim=0).mean()
    rows, features = xc.shape
    if rows < features:
        gram = xc @ xc.T + penalty * torch.eye(rows, dtype=xc.dtype, device=xc.device)
        weight = xc.T @ torch.linalg.solve(gram, yc)
    else:
        gram = xc.T @ xc + penalty * torch.eye(features, dtype=xc.dtype, device=xc.device)
        weight = torch.linalg.solve(gram, xc.T @ yc)
    return weight.float(), (y_mean - x_mean @ weight).float()


class ContentRecommender(Recommender):
    """A backbone with a content path; its cold rows come from `content_item_vectors`.

    A warm item's vector has a half learned from interactions (`id_part`: an ID embedding,
    possibly propagated) that a new item lacks. Every time the model enters eval mode, a ridge
    regression from the item's content (the backbone's modalities, concatenated) to that half
    is fitted over the warm items; `estimate_id_part` applies it to new items. Unlike a content
    projection trained by BPR (blind to any per-user constant, so its scores sit at an arbitrary
    offset from warm items' scores), the estimate lives on the warm items' own scale, so cold
    items can compete with warm ones in one ranking. The map is saved with the weights.
    """

    multimodal = True
    HParams = ContentParams

    def __init__(
        self,
        graph: InteractionGraph,
        hparams: ContentParams,
        content: ContentFeatures,
        content_mode: str,
        tau: float,
    ):
        super().__init__(graph, hparams)
        if content.n_items != graph.n_items:
            raise ValueError(f"content features cover {content.n_items} items, the split has {graph.n_items}")
        self.encoder = ContentEncoder(content_mode, content.views, content.image_dim, content.text_dim, tau)
        # Not persistent: rebuilt from the features folder, so checkpoints stay small.
        self.register_buffer("image_features", content.image.float(), persistent=False)
        self.register_buffer("text_view_features", content.text_views.float(), persistent=False)
        # A fusion without parameters gives fixed modalities: compute them once.
        self.fixed_content: list[str] = []
        if not self.encoder.learned:
            with torch.no_grad():
                modalities = self.encoder(self.image_features, self.text_view_features)
            for index, modality in enumerate(modalities):
                self.register_buffer(f"fixed_content_{index}", modality, persistent=False)
                self.fixed_content.append(f"fixed_content_{index}")
        self.register_buffer("warm_items", torch.from_numpy(graph.warm_items), persistent=False)
        self.register_buffer("id_map_weight", torch.zeros(sum(self.encoder.modality_dims), hparams.embedding_size))
        self.register_buffer("id_map_bias", torch.zeros(hparams.embedding_size))

    def item_content(self) -> list[Tensor]:
        """The modalities of every item, fusion applied."""
        if self.fixed_content:
            return [getattr(self, name) for name in self.fixed_content]
        return self.encoder(self.image_features, self.text_view_features)

    @abstractmethod
    def id_part(self) -> Tensor:
        """`(n_items, embedding_size)`: the interaction-learned half of the item vectors."""

    def estimate_id_part(self, modalities: list[Tensor]) -> Tensor:
        """The ridge estimate of `id_part` from content modalities `(B, ...)`: traceable."""
        return torch.cat(modalities, dim=-1) @ self.id_map_weight + self.id_map_bias

    @torch.no_grad()
    def calibrate(self) -> None:
        """Fit the content -> `id_part` ridge map on the warm items."""
        features = torch.cat(self.item_content(), dim=-1)[self.warm_items]
        weight, bias = ridge_regression(features, self.id_part()[self.warm_items], self.hparams.cold_ridge)
        self.id_map_weight.copy_(weight)
        self.id_map_bias.copy_(bias)

    def train(self, mode: bool = True) -> "ContentRecommender":
        """Switching to eval mode refits the cold-start map to the current weights."""
        super().train(mode)
        if not mode:
            self.calibrate()
        return self

    def cold_item_vectors(self) -> Tensor:
        return self.content_item_vectors(
            self.image_features[self.cold_items], self.text_view_features[self.cold_items]
        )

    @abstractmethod
    def content_item_vectors(self, image: Tensor, text_views: Tensor) -> Tensor:
        """`(B, K)` from content alone; torch-traceable (the service's item tower)."""

