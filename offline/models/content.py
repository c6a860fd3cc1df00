"""The base class of multi-modal backbones: frozen CLIP features through a `ContentEncoder`,
and cold items embedded from content alone through a fitted cold map (`offline.models.cold_map`)."""

from abc import abstractmethod
from collections.abc import Callable

import torch
from pydantic import Field, field_validator
from torch import Tensor

from offline.models import cold_map
from offline.models.base import InteractionGraph, Recommender
from offline.models.cold_map import ColdMapNotFitted
from offline.models.content_encoder import ContentEncoder
from offline.models.features import ContentFeatures
from offline.models.hparams import HParams

MAP_INPUT_ROWS = 65_536  # items per step of `catalog_map_input` (bounds the copies of their views)


class ContentParams(HParams):
    """Hyper-parameters of every multi-modal backbone."""

    cold_ridges: list[float] = Field(
        min_length=1,
        description="candidate ridge strengths of the content -> ID-half map (relative to the features' "
        "energy); the one that best ranks held-out warm items from content alone is used",
    )
    cold_folds: int = Field(ge=2, description="folds of warm items for choosing the ridge strength and the scale")
    view_alpha: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="attention's share of the view weights, the rest uniform: w = alpha * attention + "
        "(1 - alpha) / V (attention modes only; 0 is the mean of the views)",
    )

    @field_validator("cold_ridges")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(value <= 0 for value in values):
            raise ValueError(f"cold_ridges must all be > 0, got {values}")
        return values


class ContentRecommender(Recommender):
    """A backbone with a content path; its cold rows come from `content_item_vectors`.

    The cold map (`id_map_weight`, `id_map_bias`, `cold_center`, `cold_scale`) is fitted by an
    explicit step, `fit_cold_map`, which training calls on its final weights
    (`offline.train.trainer.fit`); it is saved with the weights, with `cold_map_fitted`, and
    the whole cold path stays one traceable function of the content. Switching to training
    mode marks the map stale; asking a stale map for cold vectors raises `ColdMapNotFitted`.
    An `attention_calibrated` fusion's cosine statistics are set here, at construction, from the
    training (warm) items' features.
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
        self.encoder = ContentEncoder(
            content_mode, content.views, content.image_dim, content.text_dim, tau, hparams.view_alpha
        )
        image, text_views = content.image.float(), content.text_views.float()
        fusion = self.encoder.fusion
        if fusion is not None and fusion.calibrated:
            warm = torch.from_numpy(graph.warm_items)
            fusion.fit_cosine_statistics(text_views[warm], image[warm])
        # Not persistent: rebuilt from the features folder, so checkpoints stay small.
        self.register_buffer("image_features", image, persistent=False)
        self.register_buffer("text_view_features", text_views, persistent=False)
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
        # Saved with the weights: a checkpoint written after `fit_cold_map` loads with its map as is.
        self.register_buffer("cold_map_fitted", torch.zeros((), dtype=torch.bool))
        self.cold_ridge: float | None = None  # the strength `fit_cold_map` chose

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

    def catalog_map_input(self, items: Tensor, rows: int = MAP_INPUT_ROWS) -> Tensor:
        """The map input (`ContentEncoder.map_input` side by side) of the catalog's `items`,
        filled `rows` items at a time: built at once, the items' copied views and their
        weighted copies would add twice its size again (about 9 GB for the warm items of a
        million-item catalog, 256-d, 5 views)."""
        dims = sum(self.encoder.map_dims)
        out = self.image_features.new_empty(len(items), dims)
        for start in range(0, len(items), rows):
            step = items[start : start + rows]
            out[start : start + len(step)] = torch.cat(
                self.encoder.map_input(self.image_features[step], self.text_view_features[step]), -1
            )
        return out

    def estimate_id_part(self, image: Tensor, text_views: Tensor) -> Tensor:
        """The ridge estimate of `id_part` from content `(B, ...)`: traceable."""
        return torch.cat(self.encoder.map_input(image, text_views), dim=-1) @ self.id_map_weight + self.id_map_bias

    @abstractmethod
    def held_out_path(self) -> Callable[[Tensor], Tensor]:
        """The content path of the warm items as a function of `estimate`, an out-of-fold
        estimate of their `id_part`, to `(n_warm, K)` vectors that leave out anything learned
        from the item's own interactions (as `content_item_vectors` would for a new item).
        What does not depend on the estimate is computed here, once: the cold map calls the
        function for every candidate ridge."""

    @abstractmethod
    def raw_content_item_vectors(self, image: Tensor, text_views: Tensor) -> Tensor:
        """`(B, K)` content-only vectors before the scale calibration; torch-traceable."""

    def raw_catalog_item_vectors(self, items: Tensor) -> Tensor:
        """`raw_content_item_vectors` of the catalog's own items (rows). A backbone that built a
        table of every item at training (FREEDOM's kNN neighbours) reads it here instead of
        recomputing it: the new-item path compares each item with every warm one, which for the
        cold fifth of a million-item catalog is a 640 GB similarity matrix."""
        return self.raw_content_item_vectors(self.image_features[items], self.text_view_features[items])

    @property
    def exact_catalog_vectors(self) -> bool:
        """Whether `raw_catalog_item_vectors` equals `raw_content_item_vectors` of the same items
        (up to float rounding); False where it reads an approximate table (FREEDOM above
        `EXACT_MAX_KEYS` warm items)."""
        return True

    def _on_warm_scale(self, raw: Tensor) -> Tensor:
        return self.cold_center + self.cold_scale * (raw - self.cold_center)

    def content_item_vectors(self, image: Tensor, text_views: Tensor) -> Tensor:
        """`(B, K)` from content alone, on the warm items' score scale; torch-traceable (the
        service's item tower)."""
        return self._on_warm_scale(self.raw_content_item_vectors(image, text_views))

    def content_view_weights(self, image: Tensor, text_views: Tensor) -> Tensor:
        """`(B, V)`: each text view's weight in the content path's fusion (`ViewFusion.view_weights`;
        uniform for the `image` mode, which fuses no text); torch-traceable (the item tower's
        second output)."""
        if self.encoder.fusion is None:
            return torch.ones_like(text_views[..., 0]) / text_views.shape[1]
        return self.encoder.fusion.view_weights(text_views, image)

    @torch.no_grad()
    def fit_cold_map(self) -> "ContentRecommender":
        """Enter eval mode and fit the cold map to the current weights on the warm items
        (`offline.models.cold_map.fit`): ridge strength by cross-validation, the content ->
        `id_part` map and the score-spread `cold_scale`. Returns the model, like `eval()`."""
        self.eval()
        warm = self.warm_items
        fitted = cold_map.fit(
            features=self.catalog_map_input(warm),
            target=self.id_part()[warm],
            users=self.user_vectors(),
            targets=cold_map.warm_pairs(self.n_items, warm, self.train_edges),
            trained=self.trained_item_vectors()[warm],
            held_out_vectors=self.held_out_path(),
            ridges=self.hparams.cold_ridges,
            n_folds=self.hparams.cold_folds,
        )
        self.id_map_weight.copy_(fitted.weight)
        self.id_map_bias.copy_(fitted.bias)
        self.cold_center.copy_(fitted.center)
        self.cold_scale.copy_(fitted.scale)
        self.cold_ridge = fitted.ridge
        self.cold_map_fitted.fill_(True)
        return self

    def train(self, mode: bool = True) -> "ContentRecommender":
        """Training makes the cold-start map stale (`fit_cold_map` fits it again); eval mode
        changes nothing."""
        super().train(mode)
        if mode:
            self.cold_map_fitted.fill_(False)
        return self

    def cold_item_vectors(self) -> Tensor:
        if not self.cold_map_fitted:
            raise ColdMapNotFitted(
                f"{self.name}'s cold-start map is not fitted to its current weights: call fit_cold_map() "
                "after training (offline.train.trainer.fit does)"
            )
        return self._on_warm_scale(self.raw_catalog_item_vectors(self.cold_items))
