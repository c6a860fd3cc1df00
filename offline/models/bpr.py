"""BPR-MF (Rendle et al. 2009): user and item ID embeddings scored by inner product. ID only."""

from torch import Tensor

from offline.models.base import InteractionGraph, Recommender, bpr_loss, l2_penalty
from offline.models.hparams import HParams


class BPR(Recommender):
    name = "bpr"

    def __init__(self, graph: InteractionGraph, hparams: HParams):
        super().__init__(graph, hparams)
        self.add_id_embeddings(hparams.embedding_size)

    def calculate_loss(self, users: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        u = self.user_embedding(users)
        p, n = self.item_embedding(positives), self.item_embedding(negatives)
        return bpr_loss(u, p, n) + self.hparams.reg_weight * l2_penalty(u, p, n)

    def user_vectors(self) -> Tensor:
        return self.user_embedding.weight

    def trained_item_vectors(self) -> Tensor:
        return self.item_embedding.weight
