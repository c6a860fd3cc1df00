"""VBPR (He & McAuley 2016), as in MMRec: an item is `[ID embedding, W . content]` and a user
has one vector of twice the size, so the score is an ID term plus a content term.

Cold path: a new item has no trained ID embedding, so its vector is `[E(content), W . content]`
with E the ridge map from content to the warm items' ID embeddings, then stretched to the warm
items' score spread (`ContentRecommender`).
"""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from offline.models.base import InteractionGraph, bpr_loss, l2_penalty
from offline.models.content import ContentParams, ContentRecommender
from offline.models.features import ContentFeatures


class VBPR(ContentRecommender):
    name = "vbpr"

    def __init__(
        self, graph: InteractionGraph, hparams: ContentParams, content: ContentFeatures, content_mode: str, tau: float
    ):
        super().__init__(graph, hparams, content, content_mode, tau)
        size = hparams.embedding_size
        self.user_embedding = nn.Embedding(graph.n_users, 2 * size)
        self.item_embedding = nn.Embedding(graph.n_items, size)
        self.projection = nn.Linear(sum(self.encoder.modality_dims), size)
        for weight in (self.user_embedding.weight, self.item_embedding.weight, self.projection.weight):
            nn.init.xavier_uniform_(weight)

    def _project(self, modalities: list[Tensor]) -> Tensor:
        return self.projection(torch.cat(modalities, dim=-1))

    def calculate_loss(self, users: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        items = self.trained_item_vectors()
        u, p, n = self.user_embedding(users), items[positives], items[negatives]
        return bpr_loss(u, p, n) + self.hparams.reg_weight * l2_penalty(u, p, n)

    def user_vectors(self) -> Tensor:
        return self.user_embedding.weight

    def trained_item_vectors(self) -> Tensor:
        return torch.cat([self.item_embedding.weight, self._project(self.item_content())], dim=-1)

    @property
    def vector_size(self) -> int:
        return 2 * self.hparams.embedding_size

    def id_part(self) -> Tensor:
        return self.item_embedding.weight

    def held_out_path(self) -> Callable[[Tensor], Tensor]:
        projected = self._project(self.item_content())[self.warm_items]
        return lambda estimate: torch.cat([estimate, projected], dim=-1)

    def raw_content_item_vectors(self, image: Tensor, text_views: Tensor) -> Tensor:
        modalities = self.encoder(image, text_views)
        return torch.cat([self.estimate_id_part(image, text_views), self._project(modalities)], dim=-1)
