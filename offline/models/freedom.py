"""FREEDOM (Zhou & Shen, "A Tale of Two Graphs", MM 2023), following MMRec's implementation.

Two graphs:
- a frozen item-item kNN graph per modality (image, fused text), built once from the content
  features over the warm items (rebuilt every epoch when the fusion learns a view prior),
  mixed with `mm_image_weight`; `n_mm_layers` convolutions of the item ID embeddings over it
  give `h`;
- the user-item graph of the training interactions, propagated LightGCN-style; during training
  its edges are pruned every epoch with probability favouring low-degree pairs
  (degree-sensitive edge pruning, `dropout` = share removed).

A warm item's vector is `lightgcn_item + h_item`; a user's is its LightGCN vector. Each modality
also has a linear projection to the embedding size, trained with its own BPR loss against the
same user vectors (weight `reg_weight`), which regularises the users towards content.

Differences from MMRec: the CLIP features stay frozen (MMRec fine-tunes them as embeddings,
which a new item could not use), and kNN neighbours are taken among warm items only (cold items
have untrained ID embeddings).

Cold path (`content_item_vectors`), using only the new item's content and the frozen graph:
    v = E(content) + sum_m w_m * mean_{j in kNN_m(item)} h_prev[j]
The second term is how `h` of a warm item is computed from its own kNN row (kNN_m: the
`knn_k` most cosine-similar warm items in modality m; `h_prev`: the item-graph convolution one
layer short of `h`, the raw ID embeddings when `n_mm_layers` = 1). The first replaces the
LightGCN half a new item lacks by its ridge estimate from content, fitted on the warm items.
`ContentRecommender` then stretches v about the mean warm vector to the warm items' score
spread, with the ridge strength and the stretch measured on held-out warm items (their own
LightGCN half estimated out of fold, themselves left out of their kNN rows), so v is on the
warm vectors' scale and inner-product compatible.

Why not the trained projections (mean_m projection_m(content)) for the first term: their BPR
loss only sees score differences, so their scores carry an arbitrary per-user offset. On
ML-100K (untrained-CLIP features) that offset ranked held-out cold items below every warm
item (cold Recall@20 among all items 0.0001, under the 0.016 of random), while the ridge
estimate gave 0.032, and 0.274 vs 0.253 among cold items only. The ridge estimate alone still
regresses to the mean (cold Recall@20 among all items 0.013 with attention, seed 0);
the stretch puts new items where warm items of the same spread rank (0.085 over 3 seeds,
with the weighted views of `ContentEncoder.map_input`).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from offline.models.base import InteractionGraph, bpr_loss
from offline.models.content import ContentParams, ContentRecommender
from offline.models.features import ContentFeatures
from offline.models.graph import (
    edge_weights,
    knn_neighbours,
    knn_search,
    knn_table,
    normalized_adjacency,
    propagate,
    sparse_matrix,
)


class FreedomParams(ContentParams):
    knn_k: int = Field(ge=1)
    n_mm_layers: int = Field(ge=1)
    n_ui_layers: int = Field(ge=0)
    mm_image_weight: float = Field(ge=0, le=1)
    dropout: float = Field(ge=0, lt=1)


class ContentGraph(nn.Module):
    """A frozen kNN graph over the warm items for one modality, kept as index tensors: `table`
    holds every item's neighbours among the warm ones (cold items' too), exact up to
    `EXACT_MAX_KEYS` warm items and approximate above (offline/models/knn.py)."""

    def __init__(self, features: Tensor, warm_items: Tensor, k: int):
        super().__init__()
        k = min(k, len(warm_items))
        found = knn_search(features, warm_items, k)
        self.exact = found.recall is None
        self.register_buffer("keys", F.normalize(features[warm_items], dim=-1), persistent=False)
        self.register_buffer("key_ids", warm_items, persistent=False)
        self.register_buffer("table", torch.from_numpy(found.rows).to(warm_items.device), persistent=False)

    def neighbours(self, features: Tensor) -> Tensor:
        return knn_neighbours(features, self.keys, self.key_ids, self.table.shape[1])


class FREEDOM(ContentRecommender):
    name = "freedom"
    HParams = FreedomParams

    def __init__(
        self,
        graph: InteractionGraph,
        hparams: FreedomParams,
        content: ContentFeatures,
        content_mode: str,
        tau: float,
    ):
        super().__init__(graph, hparams, content, content_mode, tau)
        size = hparams.embedding_size
        self.add_id_embeddings(size)
        self.projections = nn.ModuleList(nn.Linear(dim, size) for dim in self.encoder.modality_dims)

        edges = torch.from_numpy(graph.edges)
        self.register_buffer("edge_users", edges[:, 0].contiguous(), persistent=False)
        self.register_buffer("edge_items", edges[:, 1].contiguous(), persistent=False)
        self.register_buffer(
            "edge_keep_weights",
            edge_weights(self.edge_users, self.edge_items, graph.n_users, graph.n_items),
            persistent=False,
        )
        adjacency = normalized_adjacency(self.edge_users, self.edge_items, graph.n_users, graph.n_items)
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.register_buffer("train_adjacency", adjacency, persistent=False)

        weight = hparams.mm_image_weight
        self.graph_weights = [weight, 1.0 - weight] if len(self.encoder.modality_dims) == 2 else [1.0]
        self._build_content_graphs()

    def _build_content_graphs(self) -> None:
        """The kNN graph of each modality over the warm items, and their mix."""
        with torch.no_grad():
            features = self.encoder.graph_features(self.image_features, self.text_view_features)
        self.content_graphs = nn.ModuleList(ContentGraph(x, self.warm_items, self.hparams.knn_k) for x in features)
        self.register_buffer("item_adjacency", self._item_adjacency(), persistent=False)

    def _item_adjacency(self) -> Tensor:
        """The mixed kNN graph as a sparse (n_items, n_items) matrix: row i averages its
        neighbours (MMRec's normalised kNN adjacency, every row having k entries)."""
        rows, cols, values = [], [], []
        for weight, graph in zip(self.graph_weights, self.content_graphs):
            n, k = graph.table.shape
            rows.append(torch.arange(n).repeat_interleave(k))
            cols.append(graph.table.flatten())
            values.append(torch.full((n * k,), weight / k))
        return sparse_matrix(torch.cat(rows), torch.cat(cols), torch.cat(values), (self.n_items, self.n_items))

    def _item_graph_step(self, h: Tensor, neighbours: list[Tensor]) -> Tensor:
        """One item-graph convolution for rows given by their kNN ids, one `(B, k)` per
        modality: the traceable twin of a row of `item_adjacency @ h`."""
        return sum(w * h[ids].mean(dim=1) for w, ids in zip(self.graph_weights, neighbours))

    def _item_graph_layers(self) -> list[Tensor]:
        """h after 0..n_mm_layers convolutions over the frozen content graph."""
        layers = [self.item_embedding.weight]
        for _ in range(self.hparams.n_mm_layers):
            layers.append(torch.sparse.mm(self.item_adjacency, layers[-1]))
        return layers

    def _lightgcn(self, adjacency: Tensor) -> tuple[Tensor, Tensor]:
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        return propagate(adjacency, ego, self.hparams.n_ui_layers).split([self.n_users, self.n_items])

    def _forward(self, adjacency: Tensor) -> tuple[Tensor, Tensor]:
        users, items = self._lightgcn(adjacency)
        return users, items + self._item_graph_layers()[-1]

    def pre_epoch(self) -> None:
        """Degree-sensitive edge pruning: keep (1 - dropout) of the edges, sampled without
        replacement with weight 1 / sqrt(deg(u) deg(i)), and renormalise. A learned view
        prior's text graph is rebuilt first, from the prior as it is now."""
        if self.encoder.graph_follows_training:
            self._build_content_graphs()
        if self.hparams.dropout == 0:
            return
        n_keep = max(1, int(len(self.edge_users) * (1.0 - self.hparams.dropout)))
        keep = torch.multinomial(self.edge_keep_weights, n_keep, replacement=False)
        self.train_adjacency = normalized_adjacency(
            self.edge_users[keep], self.edge_items[keep], self.n_users, self.n_items
        )

    def calculate_loss(self, users: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        user_vectors, item_vectors = self._forward(self.train_adjacency)
        u = user_vectors[users]
        loss = bpr_loss(u, item_vectors[positives], item_vectors[negatives])
        projected = [projection(x) for projection, x in zip(self.projections, self.item_content())]
        content_loss = sum(bpr_loss(u, items[positives], items[negatives]) for items in projected)
        return loss + self.hparams.reg_weight * content_loss

    def train(self, mode: bool = True) -> "FREEDOM":
        """A graph that follows training is rebuilt for the weights being evaluated (the best
        checkpoint's, after training) before the cold map is fitted to it."""
        if not mode and self.encoder.graph_follows_training:
            self._build_content_graphs()
        super().train(mode)
        return self

    def user_vectors(self) -> Tensor:
        return self._forward(self.adjacency)[0]

    def trained_item_vectors(self) -> Tensor:
        return self._forward(self.adjacency)[1]

    def id_part(self) -> Tensor:
        return self._lightgcn(self.adjacency)[1]

    def held_out_path(self) -> Callable[[Tensor], Tensor]:
        """The cold-path formula for warm items, each item dropped from its own kNN row (it is
        its own nearest neighbour, and its ID embedding learned from its interactions). The
        neighbours come from the FAISS kNN table (`knn_table`), not a warm x warm similarity
        matrix, which would not fit at a shop's scale; the graph part does not depend on the
        estimate, so that self-join runs once per fit, not once per candidate ridge (at 10^6
        items it is minutes)."""
        warm = self.warm_items
        frozen = self.encoder.graph_features(self.image_features[warm], self.text_view_features[warm])
        positions = torch.arange(len(warm), device=warm.device)
        neighbours = []
        for graph, features in zip(self.content_graphs, frozen):
            k = graph.table.shape[1]
            ids = warm[knn_table(features, positions, k + 1)]
            keep = ids != warm.unsqueeze(1)
            keep[keep.all(dim=1), -1] = False  # the item itself not in its top k + 1 (ties)
            neighbours.append(ids[keep].view(len(warm), k))
        graph_part = self._graph_part(neighbours)
        return lambda estimate: estimate + graph_part

    def raw_content_item_vectors(self, image: Tensor, text_views: Tensor) -> Tensor:
        frozen = self.encoder.graph_features(image, text_views)
        neighbours = [graph.neighbours(x) for graph, x in zip(self.content_graphs, frozen)]
        return self.estimate_id_part(image, text_views) + self._graph_part(neighbours)

    def raw_catalog_item_vectors(self, items: Tensor) -> Tensor:
        estimate = self.estimate_id_part(self.image_features[items], self.text_view_features[items])
        return estimate + self._graph_part([graph.table[items] for graph in self.content_graphs])

    @property
    def exact_catalog_vectors(self) -> bool:
        return all(graph.exact for graph in self.content_graphs)

    def _graph_part(self, neighbours: list[Tensor]) -> Tensor:
        """The item-graph half of the content path for items with these neighbour ids (one
        `(B, k)` table per modality)."""
        tables = [graph.table for graph in self.content_graphs]
        h_prev = self.item_embedding.weight  # the gather form of `_item_graph_layers` traces into ONNX
        for _ in range(self.hparams.n_mm_layers - 1):
            h_prev = self._item_graph_step(h_prev, tables)
        return self._item_graph_step(h_prev, neighbours)
