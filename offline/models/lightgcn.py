"""LightGCN (He et al. 2020): ID embeddings averaged over propagation steps on the normalised
user-item graph of the training interactions. ID only."""

import torch
from pydantic import Field
from torch import Tensor

from offline.models.base import InteractionGraph, Recommender, bpr_loss, l2_penalty
from offline.models.graph import normalized_adjacency, propagate
from offline.models.hparams import HParams


class LightGCNParams(HParams):
    n_layers: int = Field(ge=1)


class LightGCN(Recommender):
    name = "lightgcn"
    HParams = LightGCNParams

    def __init__(self, graph: InteractionGraph, hparams: LightGCNParams):
        super().__init__(graph, hparams)
        self.add_id_embeddings(hparams.embedding_size)
        edges = torch.from_numpy(graph.edges)
        adjacency = normalized_adjacency(edges[:, 0], edges[:, 1], graph.n_users, graph.n_items)
        self.register_buffer("adjacency", adjacency, persistent=False)

    def propagated(self) -> tuple[Tensor, Tensor]:
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        return propagate(self.adjacency, ego, self.hparams.n_layers).split([self.n_users, self.n_items])

    def calculate_loss(self, users: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        user_vectors, item_vectors = self.propagated()
        loss = bpr_loss(user_vectors[users], item_vectors[positives], item_vectors[negatives])
        ego = (self.user_embedding(users), self.item_embedding(positives), self.item_embedding(negatives))
        return loss + self.hparams.reg_weight * l2_penalty(*ego)

    def user_vectors(self) -> Tensor:
        return self.propagated()[0]

    def trained_item_vectors(self) -> Tensor:
        return self.propagated()[1]
