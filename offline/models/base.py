"""The backbone contract shared by every recommender, and the training graph it is built on.

Scores are always inner products: `full_sort_predict(users) == user_vectors()[users] @
item_vectors().T`, so the vectors go straight into an inner-product index. `item_vectors()`
covers every item; cold items (never in training) take the content path
`content_item_vectors`, which ID-only models do not have (their cold rows are zero).
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from offline.models.hparams import HParams


class ColdStartUnsupported(NotImplementedError):
    """An ID-only backbone was asked for a vector of an item it never saw in training."""


class SplitLike(Protocol):
    """What a backbone needs from a split (a `SplitData` fits)."""

    n_users: int
    n_items: int
    train: np.ndarray
    cold_items: np.ndarray


@dataclass(frozen=True)
class InteractionGraph:
    """What a backbone may learn from: sizes, the training pairs `[user, item]`, the cold items."""

    n_users: int
    n_items: int
    train: np.ndarray
    cold_items: np.ndarray

    def __post_init__(self) -> None:
        train = np.asarray(self.train, dtype=np.int64).reshape(-1, 2)
        cold = np.asarray(self.cold_items, dtype=np.int64).reshape(-1)
        object.__setattr__(self, "train", train)
        object.__setattr__(self, "cold_items", cold)
        if len(train) == 0:
            raise ValueError("no training interactions")
        if train[:, 0].min() < 0 or train[:, 0].max() >= self.n_users:
            raise ValueError(f"training users must lie in [0, {self.n_users})")
        if train[:, 1].min() < 0 or train[:, 1].max() >= self.n_items:
            raise ValueError(f"training items must lie in [0, {self.n_items})")
        if np.isin(train[:, 1], cold).any():
            raise ValueError("a cold item appears in the training interactions")

    @classmethod
    def from_split(cls, split: SplitLike) -> "InteractionGraph":
        return cls(split.n_users, split.n_items, split.train, split.cold_items)

    @cached_property
    def edges(self) -> np.ndarray:
        """Distinct training pairs, sorted by user then item."""
        return np.unique(self.train, axis=0)

    @cached_property
    def warm_items(self) -> np.ndarray:
        """Items a model may train on: every item that is not cold."""
        return np.setdiff1d(np.arange(self.n_items, dtype=np.int64), self.cold_items)


def bpr_loss(users: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
    """Bayesian personalised ranking: -log sigmoid(score(pos) - score(neg)), batch mean."""
    margin = (users * positives).sum(dim=-1) - (users * negatives).sum(dim=-1)
    return -F.logsigmoid(margin).mean()


def l2_penalty(*embeddings: Tensor) -> Tensor:
    """Half the batch mean of the squared L2 norms of each embedding tensor, summed."""
    return sum(embedding.pow(2).sum(dim=-1).mean() for embedding in embeddings) / 2


class Recommender(nn.Module, ABC):
    """Base of every backbone; subclasses set `name` and `HParams` and the abstract methods."""

    name: ClassVar[str]
    HParams: ClassVar[type[HParams]] = HParams
    multimodal: ClassVar[bool] = False

    def __init__(self, graph: InteractionGraph, hparams: HParams):
        super().__init__()
        self.n_users = graph.n_users
        self.n_items = graph.n_items
        self.hparams = hparams
        self.register_buffer("cold_items", torch.from_numpy(graph.cold_items), persistent=False)

    def add_id_embeddings(self, size: int) -> None:
        """`user_embedding` and `item_embedding` of `size`, Xavier-initialised (users first)."""
        self.user_embedding = nn.Embedding(self.n_users, size)
        self.item_embedding = nn.Embedding(self.n_items, size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)

    @abstractmethod
    def calculate_loss(self, users: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        """The training loss of a batch of (user, positive item, sampled negative item)."""

    @abstractmethod
    def user_vectors(self) -> Tensor:
        """`(n_users, K)`."""

    @abstractmethod
    def trained_item_vectors(self) -> Tensor:
        """`(n_items, K)` from the trained (interaction) path; cold rows get replaced."""

    def content_item_vectors(self, image: Tensor, text_views: Tensor) -> Tensor:
        """`(B, K)` item vectors from content alone: the cold-start path."""
        raise ColdStartUnsupported(
            f"{self.name} is an ID-only model and cannot embed an item from its content; "
            f"use a multi-modal backbone (vbpr, freedom, bm3) for cold items"
        )

    def cold_item_vectors(self) -> Tensor:
        """Vectors of the cold items: zeros for an ID-only model."""
        return torch.zeros(len(self.cold_items), self.hparams.embedding_size, device=self.cold_items.device)

    def item_vectors(self) -> Tensor:
        """`(n_items, K)`: trained vectors for warm items, `cold_item_vectors` for cold ones."""
        vectors = self.trained_item_vectors()
        if len(self.cold_items) == 0:
            return vectors
        cold = self.cold_item_vectors().to(vectors.dtype)
        return vectors.index_copy(0, self.cold_items, cold)

    def full_sort_predict(self, users: Tensor) -> Tensor:
        """Scores `(B, n_items)` of every item for a batch of users."""
        return self.user_vectors()[users] @ self.item_vectors().T

    def pre_epoch(self) -> None:
        """Hook run before every training epoch (FREEDOM prunes graph edges here)."""
