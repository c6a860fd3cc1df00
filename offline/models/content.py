"""The content side of multi-modal backbones: frozen CLIP features, the CLIPER fusion, and the
base class whose cold items are embedded from content alone.

`content_mode` picks the text fusion (`attention`, `attention_prior`, `mean`, `sum`, `concat`,
`mlp`, `global`) or `image` for image features only. A backbone sees its content as a list of
modalities: `[image]` or `[image, fused text]`.
"""

from abc import abstractmethod
from typing import Literal, get_args

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from cliper.views import GLOBAL_VIEW
from offline.fusion import ViewFusion
from offline.models.base import InteractionGraph, Recommender
from offline.models.features import ContentFeatures
from offline.models.hparams import HParams

ContentMode = Literal["none", "image", "global", "mean", "sum", "concat", "mlp", "attention", "attention_prior"]
CONTENT_MODES: tuple[str, ...] = get_args(ContentMode)
ID_ONLY = "none"
MULTIMODAL_MODES = tuple(mode for mode in CONTENT_MODES if mode != ID_ONLY)
WEIGHTED_MODES = ("attention", "attention_prior", "mean", "sum")  # fusions that sum weighted views


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


class ContentParams(HParams):
    """Hyper-parameters of every multi-modal backbone."""

    cold_ridges: list[float] = Field(
        min_length=1,
        description="candidate ridge strengths of the content -> ID-half map (relative to the features' "
        "energy); the one that best ranks held-out warm items from content alone is used",
    )
    cold_folds: int = Field(ge=2, description="folds of warm items for choosing the ridge strength and the scale")

    @field_validator("cold_ridges")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(value <= 0 for value in values):
            raise ValueError(f"cold_ridges must all be > 0, got {values}")
        return values


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


COLD_RECALL_AT = 20  # the cut-off of the held-out ranking that picks the ridge strength


def recall_at(scores: Tensor, targets: Tensor, k: int) -> float:
    """Mean recall@k over the rows of `scores` that have a target (`targets`: boolean, same shape)."""
    has_target = targets.any(dim=1)
    scores, targets = scores[has_target], targets[has_target]
    top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices
    return (targets.gather(1, top).sum(dim=1) / targets.sum(dim=1)).mean().item()


def centred_score_norm(users: Tensor, items: Tensor) -> Tensor:
    """Frobenius norm of the score matrix `users @ items.T` with each user's mean score removed."""
    scores = users @ items.T
    return (scores - scores.mean(dim=1, keepdim=True)).norm()


class ContentRecommender(Recommender):
    """A backbone with a content path; its cold rows come from `content_item_vectors`.

    A warm item's vector has a half learned from interactions (`id_part`: an ID embedding,
    possibly propagated) that a new item lacks. When the model enters eval mode with weights
    the map was not fitted to (once after training: validation ranks warm items without it, see
    `warm_vectors`), the cold map is refitted on the warm items (`calibrate`), in three steps:

    1. The ID half is estimated by a ridge regression from the item's content (the backbone's
       modalities with weighted views side by side, `ContentEncoder.map_input`). Its strength
       is chosen among `cold_ridges` by `cold_folds`-fold cross-validation over the warm items:
       each fold's items get their content-only vectors from a map fitted on the other folds
       (anything learned from their own interactions left out, see `held_out_vectors`), and
       the strength whose vectors best rank each user's training items among the fold's items
       wins. That mirrors the cold-only protocol; squared error would pick the strongest
       penalty, whose estimates barely differ between items.
    2. Any such estimate regresses to the mean: over held-out warm items its scores spread
       1.0 to 3.8 times narrower than the trained vectors' scores (ML-100K), so a new item
       seldom reaches a user's top-K among warm items (cold Recall@20 among all items was at
       or below a random order). The content vectors are therefore stretched about the mean
       warm item vector, `v = center + scale * (v_content - center)`, with `scale` the ratio of
       the per-user-centred score spreads of the warm items' trained vectors and of their
       held-out content vectors. Each user's order of the new items is unchanged (an affine
       map with a positive slope per user); only their place among the warm items moves, to
       where items of the same spread sit, instead of always below the user's favourites.
    3. The map is refitted on all warm items at the chosen strength.

    Unlike a content projection trained by BPR (blind to any per-user constant, so its scores
    sit at an arbitrary offset from warm items' scores), the estimate lives on the warm items'
    own scale. The map, `cold_center` and `cold_scale` are saved with the weights; the whole
    cold path stays one traceable function of the content.
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
        self.register_buffer("train_edges", torch.from_numpy(graph.edges), persistent=False)
        self.register_buffer("id_map_weight", torch.zeros(sum(self.encoder.map_dims), hparams.embedding_size))
        self.register_buffer("id_map_bias", torch.zeros(hparams.embedding_size))
        self.register_buffer("cold_center", torch.zeros(self.vector_size))
        self.register_buffer("cold_scale", torch.ones(()))
        # Saved with the weights: a checkpoint written after `calibrate` loads with its map as is.
        self.register_buffer("cold_map_fitted", torch.zeros((), dtype=torch.bool))
        self.cold_ridge: float | None = None  # the strength `calibrate` chose

    @property
    def vector_size(self) -> int:
        """K, the size of user and item vectors."""
        return self.hparams.embedding_size

    def item_content(self) -> list[Tensor]:
        """The modalities of every item, fusion applied."""
        if self.fixed_content:
            return [getattr(self, name) for name in self.fixed_content]
        return self.encoder(self.image_features, self.text_view_features)

    @abstractmethod
    def id_part(self) -> Tensor:
        """`(n_items, embedding_size)`: the interaction-learned half of the item vectors."""

    def estimate_id_part(self, image: Tensor, text_views: Tensor) -> Tensor:
        """The ridge estimate of `id_part` from content `(B, ...)`: traceable."""
        return torch.cat(self.encoder.map_input(image, text_views), dim=-1) @ self.id_map_weight + self.id_map_bias

    @abstractmethod
    def held_out_vectors(self, estimate: Tensor) -> Tensor:
        """`(n_warm, K)`: the content-path vectors of the warm items given `estimate`, an
        out-of-fold estimate of their `id_part`, leaving out anything learned from the item's
        own interactions (as `content_item_vectors` would for a new item)."""

    @abstractmethod
    def raw_content_item_vectors(self, image: Tensor, text_views: Tensor) -> Tensor:
        """`(B, K)` content-only vectors before the scale calibration; torch-traceable."""

    def content_item_vectors(self, image: Tensor, text_views: Tensor) -> Tensor:
        """`(B, K)` from content alone, on the warm items' score scale; torch-traceable (the
        service's item tower)."""
        raw = self.raw_content_item_vectors(image, text_views)
        return self.cold_center + self.cold_scale * (raw - self.cold_center)

    def content_view_weights(self, image: Tensor, text_views: Tensor) -> Tensor:
        """`(B, V)`: each text view's weight in the content path's fusion (`ViewFusion.view_weights`;
        uniform for the `image` mode, which fuses no text); torch-traceable (the item tower's
        second output)."""
        if self.encoder.fusion is None:
            return torch.ones_like(text_views[..., 0]) / text_views.shape[1]
        return self.encoder.fusion.view_weights(text_views, image)

    def _folds(self) -> tuple[Tensor, ...]:
        """A fixed partition of the warm items' rows (positions in `warm_items`) into folds."""
        order = torch.randperm(len(self.warm_items), generator=torch.Generator().manual_seed(0))
        return order.to(self.warm_items.device).chunk(self.hparams.cold_folds)

    def _cross_validate(self, features: Tensor, target: Tensor, ridge: float) -> Tensor:
        """Out-of-fold ridge estimates of `target` (rows: the warm items)."""
        estimate = torch.empty_like(target)
        for fold in self._folds():
            rest = torch.ones(len(target), dtype=torch.bool, device=target.device)
            rest[fold] = False
            weight, bias = ridge_regression(features[rest], target[rest], ridge)
            estimate[fold] = features[fold] @ weight + bias
        return estimate

    def _warm_targets(self) -> Tensor:
        """`(n_users, n_warm)` booleans: which warm items each user has in training."""
        n_warm = len(self.warm_items)
        row = torch.full((self.n_items,), -1, dtype=torch.long, device=self.warm_items.device)
        row[self.warm_items] = torch.arange(n_warm, device=self.warm_items.device)
        targets = torch.zeros(self.n_users, n_warm, dtype=torch.bool, device=self.warm_items.device)
        targets[self.train_edges[:, 0], row[self.train_edges[:, 1]]] = True
        return targets

    def _fold_recall(self, users: Tensor, vectors: Tensor, targets: Tensor) -> float:
        """Recall@20 of each user's training items (`targets`, from `_warm_targets`) among the
        items of their fold (`vectors`: one row per warm item), averaged over folds: the
        cold-only protocol on warm items."""
        recalls = [recall_at(users @ vectors[fold].T, targets[:, fold], COLD_RECALL_AT) for fold in self._folds()]
        return sum(recalls) / len(recalls)

    @torch.no_grad()
    def calibrate(self) -> None:
        """Fit the cold map on the warm items: ridge strength by cross-validation, then the
        content -> `id_part` map and the score-spread `cold_scale` (see the class docstring)."""
        warm = self.warm_items
        features = torch.cat(self.encoder.map_input(self.image_features[warm], self.text_view_features[warm]), dim=-1)
        target = self.id_part()[warm]
        users = self.user_vectors()
        targets = self._warm_targets()
        best: tuple[float, float, Tensor] | None = None
        for ridge in self.hparams.cold_ridges:
            held_out = self.held_out_vectors(self._cross_validate(features, target, ridge))
            recall = self._fold_recall(users, held_out, targets)
            if best is None or recall > best[0]:
                best = (recall, ridge, held_out)
        _, self.cold_ridge, held_out = best
        trained = self.trained_item_vectors()[warm]
        weight, bias = ridge_regression(features, target, self.cold_ridge)
        self.id_map_weight.copy_(weight)
        self.id_map_bias.copy_(bias)
        self.cold_center.copy_(trained.mean(dim=0))
        self.cold_scale.copy_(centred_score_norm(users, trained) / centred_score_norm(users, held_out))
        self.cold_map_fitted.fill_(True)

    def train(self, mode: bool = True) -> "ContentRecommender":
        """Training makes the cold-start map stale; switching to eval mode refits a stale map to
        the current weights (loading weights saved before `calibrate` makes it stale too)."""
        super().train(mode)
        if mode:
            self.cold_map_fitted.fill_(False)
        elif not self.cold_map_fitted:
            self.calibrate()
        return self

    def cold_item_vectors(self) -> Tensor:
        return self.content_item_vectors(
            self.image_features[self.cold_items], self.text_view_features[self.cold_items]
        )
