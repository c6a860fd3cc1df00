"""Graph pieces shared by the graph backbones: the normalised user-item adjacency, LightGCN
propagation, and content kNN neighbourhoods (as index tensors: `knn_neighbours` traces into
ONNX for new items; `knn_table`, the training-time table of every item, is built with FAISS)."""

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from offline.models.knn import EXACT_MAX_KEYS, KnnTable, nearest_key_rows


def sparse_matrix(rows: Tensor, cols: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A sparse CSR matrix (duplicates summed): its matmul and backward run about 1.5x faster
    than COO's on CPU."""
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, size, check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


def normalized_adjacency(users: Tensor, items: Tensor, n_users: int, n_items: int) -> Tensor:
    """D^-1/2 A D^-1/2 of the symmetric (n_users + n_items)^2 bipartite graph, sparse."""
    n_nodes = n_users + n_items
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    degree = torch.bincount(rows, minlength=n_nodes).float()
    inv_sqrt = degree.clamp(min=1).pow(-0.5)
    values = inv_sqrt[rows] * inv_sqrt[cols]
    return sparse_matrix(rows, cols, values, (n_nodes, n_nodes))


def edge_weights(users: Tensor, items: Tensor, n_users: int, n_items: int) -> Tensor:
    """1 / sqrt(deg(user) deg(item)) of each edge: FREEDOM's degree-sensitive keep weight."""
    user_degree = torch.bincount(users, minlength=n_users).float().clamp(min=1)
    item_degree = torch.bincount(items, minlength=n_items).float().clamp(min=1)
    return (user_degree[users] * item_degree[items]).pow(-0.5)


def propagate(adjacency: Tensor, embeddings: Tensor, n_layers: int) -> Tensor:
    """LightGCN: the mean of the embeddings after 0..n_layers propagation steps."""
    layers = [embeddings]
    for _ in range(n_layers):
        layers.append(torch.sparse.mm(adjacency, layers[-1]))
    return torch.stack(layers).mean(dim=0)


def knn_neighbours(queries: Tensor, keys: Tensor, key_ids: Tensor, k: int) -> Tensor:
    """The ids (from `key_ids`) of the `k` keys most cosine-similar to each query, `(B, k)`.

    `keys` must be L2-normalised already. Traceable: a matmul and a top-k.
    """
    similarity = F.normalize(queries, dim=-1) @ keys.T
    return key_ids[torch.topk(similarity, k, dim=-1).indices]


def knn_search(features: Tensor, key_rows: Tensor, k: int, exact_max_keys: int = EXACT_MAX_KEYS) -> KnnTable:
    """The rows (of `features`, among `key_rows`) of the `k` rows most cosine-similar to each
    row of `features`: `knn_neighbours` of every row, exact up to `exact_max_keys` keys,
    approximate above (offline/models/knn.py, recall logged; `recall` is None when exact).
    FAISS runs on torch's thread count, so the two OpenMP pools do not oversubscribe the cores."""
    return nearest_key_rows(
        features.detach().cpu().numpy(),
        key_rows.cpu().numpy(),
        k,
        threads=torch.get_num_threads(),
        exact_max_keys=exact_max_keys,
    )


def knn_table(features: Tensor, key_rows: Tensor, k: int, exact_max_keys: int = EXACT_MAX_KEYS) -> Tensor:
    """`knn_search`'s rows as an `(N, k)` int64 tensor on `key_rows`' device."""
    return torch.from_numpy(knn_search(features, key_rows, k, exact_max_keys).rows).to(key_rows.device)
