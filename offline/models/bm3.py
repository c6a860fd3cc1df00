"""BM3 (Zhou et al., "Bootstrap Latent Representations for Multi-modal Recommendation",
WWW 2023), following MMRec's implementation: no negative sampling (the sampled negatives are
ignored); a shared predictor maps online embeddings onto dropout-perturbed, gradient-stopped
targets, aligning users with their items and each item's content projections with the item.

Online vectors: `e_user`, `e_item = lightgcn_item + id_item`; scores are
`predictor(e_user) . predictor(e_item)`.

Differences from MMRec: the CLIP features stay frozen (MMRec fine-tunes them).

Cold path (`content_item_vectors`): `predictor(E(content))`, with E the ridge estimate of a
new item's online embedding `e_item` from its content, fitted on the warm items, then stretched
to the warm items' score spread (`ContentRecommender`); the same map (`predictor`) warm items
go through, hence inner-product compatible.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from offline.models.base import InteractionGraph
from offline.models.content import ContentParams, ContentRecommender
from offline.models.features import ContentFeatures
from offline.models.graph import normalized_adjacency, propagate


class BM3Params(ContentParams):
    n_layers: int = Field(ge=0)
    dropout: float = Field(ge=0, lt=1)
    cl_weight: float = Field(ge=0)


def alignment(online: Tensor, target: Tensor) -> Tensor:
    """1 - mean cosine similarity, the target gradient-stopped."""
    return 1 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


class BM3(ContentRecommender):
    name = "bm3"
    HParams = BM3Params

    def __init__(
        self, graph: InteractionGraph, hparams: BM3Params, content: ContentFeatures, content_mode: str, tau: float
    ):
        super().__init__(graph, hparams, content, content_mode, tau)
        size = hparams.embedding_size
        self.add_id_embeddings(size)
        self.predictor = nn.Linear(size, size)
        nn.init.xavier_normal_(self.predictor.weight)
        self.projections = nn.ModuleList(nn.Linear(dim, size) for dim in self.encoder.modality_dims)
        for projection in self.projections:
            nn.init.xavier_normal_(projection.weight)
        edges = torch.from_numpy(graph.edges)
        adjacency = normalized_adjacency(edges[:, 0], edges[:, 1], graph.n_users, graph.n_items)
        self.register_buffer("adjacency", adjacency, persistent=False)

    def _online(self) -> tuple[Tensor, Tensor]:
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        users, items = propagate(self.adjacency, ego, self.hparams.n_layers).split([self.n_users, self.n_items])
        return users, items + self.item_embedding.weight

    def calculate_loss(self, users: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        user_online, item_online = self._online()
        dropout = self.hparams.dropout
        u_online, i_online = user_online[users], item_online[positives]
        u_target, i_target = F.dropout(u_online.detach(), dropout), F.dropout(i_online.detach(), dropout)
        u_pred, i_pred = self.predictor(u_online), self.predictor(i_online)
        loss = alignment(u_pred, i_target) + alignment(i_pred, u_target)
        content_loss = 0.0
        for projection, features in zip(self.projections, self.item_content()):
            projected = projection(features)[positives]
            predicted = self.predictor(projected)
            content_loss = content_loss + alignment(predicted, i_target)
            content_loss = content_loss + alignment(predicted, F.dropout(projected.detach(), dropout))
        # MMRec's EmbLoss on the full online matrices: Frobenius norms over the item count.
        reg = (user_online.norm() + item_online.norm()) / self.n_items
        return loss + self.hparams.reg_weight * reg + self.hparams.cl_weight * content_loss

    def user_vectors(self) -> Tensor:
        return self.predictor(self._online()[0])

    def trained_item_vectors(self) -> Tensor:
        return self.predictor(self._online()[1])

    def id_part(self) -> Tensor:
        return self._online()[1]

    def held_out_path(self) -> Callable[[Tensor], Tensor]:
        return self.predictor

    def raw_content_item_vectors(self, image: Tensor, text_views: Tensor) -> Tensor:
        return self.predictor(self.estimate_id_part(image, text_views))
