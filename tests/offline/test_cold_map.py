"""The cold map's fit in bounded memory (issue 17): no users x items matrix at a shop's scale.

Each quantity is checked against its dense definition on small data, and at a size where the
dense matrix would not fit in this machine's memory."""

import numpy as np
import pytest
import torch
from planted import World

from offline.models import InteractionGraph, ModelSpec, build_model
from offline.models.cold_map import (
    centred_score_norm,
    fold_recall,
    pairs_of_users,
    ridge_choice_users,
    warm_folds,
    warm_pairs,
)
from offline.models.graph import knn_neighbours

COLD_RECALL_AT = 20


def dense_centred_score_norm(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    scores = users.double() @ items.double().T
    return (scores - scores.mean(dim=1, keepdim=True)).norm().float()


def dense_fold_recall(users, vectors, edges, n_warm, folds) -> float:
    """Recall@20 of each user's items among their fold's items, averaged over users with one and
    then over folds, from a dense users x items target matrix."""
    targets = torch.zeros(len(users), n_warm, dtype=torch.bool)
    targets[edges[:, 0], edges[:, 1]] = True
    recalls = []
    for fold in folds:
        scores, fold_targets = users @ vectors[fold].T, targets[:, fold]
        keep = fold_targets.any(dim=1)
        top = scores[keep].topk(min(COLD_RECALL_AT, len(fold)), dim=1).indices
        hits = fold_targets[keep].gather(1, top).sum(dim=1) / fold_targets[keep].sum(dim=1)
        recalls.append(hits.mean().item())
    return sum(recalls) / len(recalls)


def test_centred_score_norm_equals_the_dense_definition() -> None:
    generator = torch.Generator().manual_seed(0)
    users, items = torch.randn(300, 16, generator=generator), torch.randn(500, 16, generator=generator) + 2
    torch.testing.assert_close(centred_score_norm(users, items), dense_centred_score_norm(users, items))


def test_centred_score_norm_at_a_size_whose_score_matrix_does_not_fit() -> None:
    """300,000 users x 300,000 items of float32 scores would take 360 GB. Every user is e1 and
    the items' first coordinates alternate +1 and -1, so every centred score is +-1 and the
    norm is sqrt(users x items)."""
    n = 300_000
    users = torch.zeros(n, 4)
    users[:, 0] = 1
    items = torch.zeros(n, 4)
    items[:, 0] = torch.tensor([1.0, -1.0]).repeat(n // 2)
    items[:, 1:] = 3.0  # a shared offset: no user's scores move
    assert centred_score_norm(users, items).item() == pytest.approx(n, rel=1e-6)


@pytest.mark.parametrize("score_bytes", [4 * 7, 2**20], ids=["one-user batches", "one batch"])
def test_fold_recall_in_batches_equals_the_dense_definition(score_bytes: int) -> None:
    generator = torch.Generator().manual_seed(1)
    n_users, n_items, n_edges = 40, 60, 300
    warm_items = torch.arange(0, n_items, 2)  # every other item is warm
    edges = torch.stack([torch.randint(0, n_users, (n_edges,), generator=generator),
                         torch.randint(0, n_items, (n_edges,), generator=generator)], dim=1)
    users, vectors = torch.randn(n_users, 8, generator=generator), torch.randn(len(warm_items), 8, generator=generator)
    folds = warm_folds(len(warm_items), 3)
    warm_edges = edges[edges[:, 1] % 2 == 0]
    warm_edges = torch.stack([warm_edges[:, 0], warm_edges[:, 1] // 2], dim=1)  # warm positions
    expected = dense_fold_recall(users, vectors, warm_edges, len(warm_items), folds)
    pairs = warm_pairs(n_items, warm_items, edges)
    assert fold_recall(users, vectors, pairs, folds, score_bytes=score_bytes) == pytest.approx(expected)


def test_warm_pairs_at_ten_times_amazon_clothing_without_a_dense_matrix() -> None:
    """393,870 users x 230,330 warm items: 90 GB as a dense boolean matrix."""
    n_users, n_items = 393_870, 230_330
    generator = torch.Generator().manual_seed(2)
    edges = torch.stack([torch.randint(0, n_users, (2_786_770,), generator=generator),
                         torch.randint(0, n_items, (2_786_770,), generator=generator)], dim=1)
    warm_items = torch.arange(1, n_items, 2)  # the odd items are warm, at position item // 2
    pairs = warm_pairs(n_items, warm_items, edges)
    odd = edges[edges[:, 1] % 2 == 1]
    assert np.array_equal(pairs, np.stack([odd[:, 0].numpy(), odd[:, 1].numpy() // 2], axis=1))


def test_freedom_held_out_neighbours_equal_the_dense_kNN() -> None:
    """FREEDOM's held-out vectors take each warm item's neighbours from the FAISS table; they
    equal the dense similarity matrix's top k + 1 with the item itself dropped."""
    world = World()
    split, content = world.split(), world.content()
    graph = InteractionGraph.from_split(split)
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="freedom", content_mode="attention", hparams={"knn_k": 4, "n_mm_layers": 1}), graph, content)
    model.eval()
    warm = model.warm_items
    estimate = torch.zeros(len(warm), model.hparams.embedding_size)
    with torch.no_grad():
        held_out = model.held_out_path()(estimate)
        frozen = model.encoder.graph_features(model.image_features[warm], model.text_view_features[warm])
        neighbours = []
        for item_graph, features in zip(model.content_graphs, frozen):
            ids = knn_neighbours(features, item_graph.keys, item_graph.key_ids, 5)
            neighbours.append(torch.stack([row[row != item][:4] for row, item in zip(ids, warm)]))
        h_prev = model.item_embedding.weight
        expected = model._item_graph_step(h_prev, neighbours)
    torch.testing.assert_close(held_out, expected)


def test_freedom_builds_its_held_out_neighbours_once_per_fit_not_per_ridge(monkeypatch) -> None:
    """The held-out neighbour tables do not depend on the ridge: each modality's self-join of the
    warm items runs once per fit, however many candidate ridges are compared."""
    import offline.models.freedom as freedom

    world = World()
    graph = InteractionGraph.from_split(world.split())
    ridges = [0.01, 0.1, 1.0, 10.0]
    model = build_model(ModelSpec(name="freedom", content_mode="attention", hparams={"cold_ridges": ridges}),
                        graph, world.content())
    joins = []
    real_knn_table = freedom.knn_table
    monkeypatch.setattr(freedom, "knn_table", lambda *args: joins.append(args[0].shape) or real_knn_table(*args))
    model.fit_cold_map()
    assert len(joins) == len(model.content_graphs) == 2
    assert all(rows == len(model.warm_items) for rows, _ in joins)


def test_freedoms_cold_catalog_items_read_the_knn_table_and_equal_the_new_item_path(monkeypatch) -> None:
    """The catalog's cold items take their neighbours from the training-time table (no cold x
    warm similarity matrix); below EXACT_MAX_KEYS warm items that table is exact, so their
    vectors equal the item tower's path for the same features."""
    import offline.models.freedom as freedom

    world = World()
    graph = InteractionGraph.from_split(world.split())
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="freedom", content_mode="attention"), graph, world.content()).fit_cold_map()
    cold = model.cold_items
    with torch.no_grad():
        expected = model.content_item_vectors(model.image_features[cold], model.text_view_features[cold])

        def dense_similarity(*args):
            raise AssertionError("the catalog's cold items must not be compared with every warm item")

        monkeypatch.setattr(freedom, "knn_neighbours", dense_similarity)
        stored = model.cold_item_vectors()
    assert model.exact_catalog_vectors and len(cold) > 0
    torch.testing.assert_close(stored, expected)


def test_the_ridge_is_chosen_on_every_user_or_a_fixed_sample() -> None:
    assert np.array_equal(ridge_choice_users(500, max_users=500), np.arange(500))
    sample = ridge_choice_users(393_870, max_users=20_000)
    assert len(sample) == len(np.unique(sample)) == 20_000
    assert np.array_equal(sample, np.sort(sample)) and 0 <= sample[0] and sample[-1] < 393_870
    assert np.array_equal(sample, ridge_choice_users(393_870, max_users=20_000))  # the same sample every fit


def test_targets_of_sampled_users_are_their_edges_renumbered() -> None:
    generator = torch.Generator().manual_seed(3)
    n_users, n_items = 50, 40
    edges = torch.stack([torch.randint(0, n_users, (400,), generator=generator),
                         torch.randint(0, n_items, (400,), generator=generator)], dim=1)
    pairs = warm_pairs(n_items, torch.arange(n_items), edges)
    sample = np.array([3, 7, 8, 20, 49])
    expected = sorted((sample.tolist().index(user), item) for user, item in edges.tolist() if user in sample.tolist())
    assert sorted(map(tuple, pairs_of_users(pairs, sample).tolist())) == expected


@pytest.mark.parametrize("mode", ["attention", "concat", "image"])
def test_the_map_input_built_in_steps_equals_it_built_at_once(mode) -> None:
    world = World()
    graph = InteractionGraph.from_split(world.split())
    model = build_model(ModelSpec(name="vbpr", content_mode=mode), graph, world.content())
    warm = model.warm_items
    with torch.no_grad():
        at_once = torch.cat(model.encoder.map_input(model.image_features[warm], model.text_view_features[warm]), -1)
        in_steps = model.catalog_map_input(warm, rows=7)
    assert len(warm) % 7 != 0  # a last, shorter step
    torch.testing.assert_close(in_steps, at_once)
