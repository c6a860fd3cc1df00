"""Backbone contract: registry, hyper-parameters, inner-product scoring, the cold/content path,
FREEDOM's graphs, and learning a planted structure better than random."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from planted import World

from offline.config import ConfigError
from offline.models import MODELS, ColdStartUnsupported, InteractionGraph, ModelSpec, build_model
from offline.models.features import ContentFeatures, FeaturesError
from offline.models.cold_map import (
    ColdMapNotFitted,
    RidgeStatistics,
    all_rows,
    cross_validate,
    fold_statistics,
    warm_folds,
)
from offline.models.content import ContentRecommender
from offline.models.content_encoder import ContentEncoder
from offline.models.freedom import FREEDOM
from offline.models.graph import knn_table
from offline.models.hparams import load_hparams
from offline.train.run import run_experiment
from offline.train.evaluate import Evaluator, model_vectors
from offline.train.trainer import TrainConfig, train_model

WORLD = World()
ID_ONLY = [name for name, model in MODELS.items() if not model.multimodal]
MULTIMODAL = [name for name, model in MODELS.items() if model.multimodal]


@pytest.fixture(scope="module")
def split():
    return WORLD.split()


@pytest.fixture(scope="module")
def graph(split) -> InteractionGraph:
    return InteractionGraph.from_split(split)


@pytest.fixture(scope="module")
def content() -> ContentFeatures:
    return WORLD.content()


def default_spec(name: str, mode: str | None = None) -> ModelSpec:
    return ModelSpec(name=name, content_mode=mode or ("attention" if MODELS[name].multimodal else "none"))


def ready(model):
    """The model in eval mode, a content model's cold map fitted (what training ends with)."""
    return model.fit_cold_map() if isinstance(model, ContentRecommender) else model.eval()


def test_registry_is_explicit() -> None:
    assert set(MODELS) == {"bpr", "lightgcn", "vbpr", "freedom", "bm3"}
    assert set(ID_ONLY) == {"bpr", "lightgcn"}


def test_hparams_merge_defaults_model_yaml_and_overrides() -> None:
    hp = load_hparams("freedom", FREEDOM.HParams, {"knn_k": 5})
    assert hp.embedding_size == 64 and hp.weight_decay == 0.0  # defaults.yaml
    assert hp.learning_rate == 5e-3 and hp.dropout == 0.8  # freedom.yaml over defaults.yaml
    assert hp.knn_k == 5  # override


def test_unknown_or_invalid_hparams_are_errors(graph, content) -> None:
    with pytest.raises(ConfigError, match="knn"):
        build_model(ModelSpec(name="bpr", content_mode="none", hparams={"knn_k": 3}), graph)
    with pytest.raises(ConfigError, match="dropout"):
        build_model(ModelSpec(name="freedom", hparams={"dropout": 1.5}), graph, content)


def test_content_mode_must_fit_the_backbone(graph, content) -> None:
    with pytest.raises(ConfigError, match="ID-only"):
        build_model(ModelSpec(name="lightgcn", content_mode="attention"), graph)
    with pytest.raises(ConfigError, match="multi-modal"):
        build_model(ModelSpec(name="vbpr", content_mode="none"), graph, content)
    with pytest.raises(ConfigError, match="needs content"):
        build_model(ModelSpec(name="vbpr"), graph, None)
    with pytest.raises(ConfigError, match="unknown model"):
        build_model(ModelSpec(name="nope"), graph, content)
    no_global = content.without_view("global")
    with pytest.raises(ValueError, match="global"):
        build_model(ModelSpec(name="vbpr", content_mode="global"), graph, no_global)


def test_graph_rejects_cold_items_in_training(split) -> None:
    train = np.vstack([split.train, [[0, split.cold_items[0]]]])
    with pytest.raises(ValueError, match="cold item"):
        InteractionGraph(split.n_users, split.n_items, train, split.cold_items)


@pytest.mark.parametrize("name", list(MODELS))
def test_scores_are_inner_products_of_the_vectors(name, graph, content) -> None:
    torch.manual_seed(0)
    model = ready(build_model(default_spec(name), graph, content))
    users = torch.tensor([0, 3, 7])
    with torch.no_grad():
        item_vectors = model.item_vectors()
        user_vectors = model.user_vectors()
        scores = model.full_sort_predict(users)
    assert item_vectors.shape[0] == graph.n_items and user_vectors.shape[0] == graph.n_users
    assert item_vectors.shape[1] == user_vectors.shape[1]
    torch.testing.assert_close(scores, user_vectors[users] @ item_vectors.T)


@pytest.mark.parametrize("name", MULTIMODAL)
@pytest.mark.parametrize("mode", ["image", "global", "mean", "sum", "concat", "mlp", "attention"])
def test_cold_rows_come_from_the_content_path(name, mode, graph, content) -> None:
    torch.manual_seed(0)
    model = build_model(default_spec(name, mode), graph, content).fit_cold_map()
    cold = torch.from_numpy(graph.cold_items)
    with torch.no_grad():
        item_vectors = model.item_vectors()
        from_content = model.content_item_vectors(content.image[cold], content.text_views[cold])
        user_vectors = model.user_vectors()
    assert from_content.shape == (len(cold), item_vectors.shape[1])
    torch.testing.assert_close(item_vectors[cold], from_content)
    # The service scores a new item as user . content vector, the same numbers as full ranking.
    scores = model.full_sort_predict(torch.arange(graph.n_users))
    torch.testing.assert_close(user_vectors @ from_content.T, scores[:, cold])


@pytest.mark.parametrize("name", ID_ONLY)
def test_id_only_models_have_no_content_path(name, graph, content) -> None:
    model = build_model(default_spec(name), graph).eval()
    with pytest.raises(ColdStartUnsupported, match="ID-only"):
        model.content_item_vectors(content.image[:2], content.text_views[:2])
    with torch.no_grad():
        assert model.item_vectors()[torch.from_numpy(graph.cold_items)].abs().sum() == 0


def test_freedom_content_graph_uses_only_warm_items(graph, content) -> None:
    model = build_model(ModelSpec(name="freedom", hparams={"knn_k": 4}), graph, content)
    cold = set(graph.cold_items.tolist())
    for item_graph in model.content_graphs:
        assert item_graph.table.shape == (graph.n_items, 4)
        assert not cold & set(item_graph.table.flatten().tolist())
        warm = torch.from_numpy(graph.warm_items)
        assert (item_graph.table[warm, 0] == warm).all()  # a warm item is its own nearest neighbour


def test_freedom_cold_vector_is_content_estimate_plus_neighbour_mean(graph, content) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(name="freedom", content_mode="image", hparams={"knn_k": 3})
    model = build_model(spec, graph, content).fit_cold_map()
    item = int(graph.cold_items[0])
    image = content.image[item : item + 1]
    with torch.no_grad():
        vector = model.raw_content_item_vectors(image, content.text_views[item : item + 1])
        warm = torch.from_numpy(graph.warm_items)
        similarity = torch.nn.functional.cosine_similarity(content.image[warm], image)
        neighbours = warm[similarity.topk(3).indices]
        estimate = image @ model.id_map_weight + model.id_map_bias
        expected = estimate + model.item_embedding.weight[neighbours].mean(dim=0)
    torch.testing.assert_close(vector, expected)


def test_freedom_cold_path_matches_the_sparse_item_graph_with_two_layers(graph, content) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(name="freedom", content_mode="image", hparams={"knn_k": 3, "n_mm_layers": 2})
    model = build_model(spec, graph, content).fit_cold_map()
    items = torch.from_numpy(graph.cold_items[:5])
    with torch.no_grad():
        vectors = model.raw_content_item_vectors(content.image[items], content.text_views[items])
        h1 = torch.sparse.mm(model.item_adjacency, model.item_embedding.weight)  # one layer, training form
        neighbours = model.content_graphs[0].neighbours(content.image[items])
        estimate = model.estimate_id_part(content.image[items], content.text_views[items])
        expected = estimate + h1[neighbours].mean(dim=1)
    torch.testing.assert_close(vectors, expected)


@pytest.mark.parametrize("rows", [50, 8])  # more and fewer rows than features
def test_ridge_statistics_recover_a_linear_map(rows) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 10, generator=generator) + 5.0  # far from zero: the shift must not lose digits
    weight, bias = torch.randn(10, 3, generator=generator), torch.randn(3, generator=generator)
    y = x @ weight + bias
    fitted_weight, fitted_bias = RidgeStatistics.of(x, y, x.mean(dim=0)).solve(1e-9)
    torch.testing.assert_close(x @ fitted_weight + fitted_bias, y, atol=1e-3, rtol=1e-3)
    shrunk, _ = RidgeStatistics.of(x, y, x.mean(dim=0)).solve(10.0)
    assert shrunk.norm() < fitted_weight.norm()


def dense_ridge(x: torch.Tensor, y: torch.Tensor, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ridge of the definition, as one least-squares problem: [Xc; sqrt(p) I] W = [Yc; 0]."""
    x, y = x.double(), y.double()
    xc, yc = x - x.mean(dim=0), y - y.mean(dim=0)
    penalty = strength * xc.pow(2).sum(dim=0).mean()
    stacked = torch.cat([xc, penalty.sqrt() * torch.eye(x.shape[1], dtype=x.dtype)])
    weight = torch.linalg.lstsq(stacked, torch.cat([yc, torch.zeros(x.shape[1], y.shape[1], dtype=y.dtype)])).solution
    return weight.float(), (y.mean(dim=0) - x.mean(dim=0) @ weight).float()


def test_each_folds_map_is_the_ridge_of_the_other_folds_rows() -> None:
    """Statistics computed once per fold, in steps smaller than a fold, give every fold's
    complement (and all rows) the ridge solved directly on those rows."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(300, 12, generator=generator) * 0.1 + 0.5
    y = x @ torch.randn(12, 4, generator=generator) + 0.3 * torch.randn(300, 4, generator=generator)
    folds = warm_folds(300, 5)
    statistics = fold_statistics(x, y, folds, chunk=16)
    estimate = cross_validate(x, statistics, 0.05, folds)
    for fold in folds:
        rest = torch.ones(300, dtype=torch.bool)
        rest[fold] = False
        weight, bias = dense_ridge(x[rest], y[rest], 0.05)
        torch.testing.assert_close(estimate[fold], x[fold] @ weight + bias, atol=1e-5, rtol=1e-4)
    weight, bias = dense_ridge(x, y, 0.05)
    fitted_weight, fitted_bias = all_rows(statistics).solve(0.05)
    torch.testing.assert_close(fitted_weight, weight, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fitted_bias, bias, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", MULTIMODAL)
def test_cold_map_is_fitted_by_the_explicit_step_only_and_saved(name, graph, content) -> None:
    torch.manual_seed(0)
    model = build_model(default_spec(name), graph, content)
    model.eval()  # eval mode fits nothing: a new item has no vector until the map is fitted
    assert model.id_map_weight.abs().sum() == 0 and not model.cold_map_fitted
    with pytest.raises(ColdMapNotFitted, match="fit_cold_map"):
        model.item_vectors()
    model.fit_cold_map()
    assert model.id_map_weight.abs().sum() > 0 and model.cold_map_fitted
    model.train()  # training makes the map stale
    with pytest.raises(ColdMapNotFitted):
        model.eval().item_vectors()
    assert {"id_map_weight", "id_map_bias"} <= model.state_dict().keys()
    with torch.no_grad():  # a fitted intercept: zero mean residual over the warm items
        warm = torch.from_numpy(graph.warm_items)
        residual = model.estimate_id_part(model.image_features, model.text_view_features)[warm] - model.id_part()[warm]
    assert residual.mean(dim=0).abs().max() < 1e-4


def test_freedom_text_graph_follows_a_learned_view_prior(graph, content) -> None:
    model = build_model(ModelSpec(name="freedom", content_mode="attention_prior", hparams={"knn_k": 4}), graph, content)
    plain = build_model(ModelSpec(name="freedom", content_mode="attention", hparams={"knn_k": 4}), graph, content)
    torch.testing.assert_close(model.content_graphs[1].table, plain.content_graphs[1].table)  # prior 0: CLIPER
    with torch.no_grad():
        model.encoder.fusion.prior[0] = 20.0  # the first view alone
    model.pre_epoch()
    first_view_graph = knn_table(content.text_views[:, 0], torch.from_numpy(graph.warm_items), 4)
    torch.testing.assert_close(model.content_graphs[1].table, first_view_graph)
    with torch.no_grad():
        model.encoder.fusion.prior[0] = 0.0
    model.eval()  # the weights being evaluated get their own graph (before the cold map is fitted)
    torch.testing.assert_close(model.content_graphs[1].table, plain.content_graphs[1].table)


def test_freedom_prunes_edges_each_epoch(graph, content) -> None:
    model = build_model(ModelSpec(name="freedom", hparams={"dropout": 0.5}), graph, content)
    torch.manual_seed(0)
    model.pre_epoch()
    kept = model.train_adjacency._nnz() // 2
    assert kept == int(len(graph.edges) * 0.5)
    assert model.adjacency._nnz() // 2 == len(graph.edges)


def test_features_align_by_item_id(tmp_path, split) -> None:
    folder = WORLD.write_features(tmp_path / "features")  # rows stored in reverse order
    loaded = ContentFeatures.load(folder, split.item_ids)
    expected = WORLD.content()
    torch.testing.assert_close(loaded.image, expected.image)
    torch.testing.assert_close(loaded.text_views, expected.text_views)
    assert loaded.views[-1] == "global"
    with pytest.raises(FeaturesError, match="no features"):
        ContentFeatures.load(folder, ["i0", "unknown-item"])


@pytest.mark.parametrize("mode", ["attention", "attention_prior"])
def test_content_exports_to_onnx(mode, graph, content, tmp_path) -> None:
    """The cold path (fusion + kNN + projections) traces into ONNX: the service's item tower."""
    model = build_model(ModelSpec(name="freedom", content_mode=mode), graph, content)
    if mode == "attention_prior":
        with torch.no_grad():
            model.encoder.fusion.prior.copy_(torch.linspace(-1.0, 1.0, len(content.views)))  # as if trained
    model.fit_cold_map()

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image: torch.Tensor, text_views: torch.Tensor) -> torch.Tensor:
            return self.model.content_item_vectors(image, text_views)

    path = tmp_path / "tower.onnx"
    batch = torch.export.Dim("batch")
    example = (content.image[:4], content.text_views[:4])
    torch.onnx.export(Tower().eval(), example, str(path), dynamic_shapes=({0: batch}, {0: batch}))
    session = ort.InferenceSession(str(path))
    names = [node.name for node in session.get_inputs()]
    (vectors,) = session.run(None, dict(zip(names, (content.image[10:17].numpy(), content.text_views[10:17].numpy()))))
    with torch.no_grad():
        expected = model.content_item_vectors(content.image[10:17], content.text_views[10:17])
    np.testing.assert_allclose(vectors, expected.numpy(), atol=1e-4)


def random_recall(split, k: int = 10, candidates: int | None = None) -> float:
    return k / (candidates or (split.n_items - len(split.cold_items)))


@pytest.mark.parametrize(
    ("name", "mode"),
    [("bpr", "none"), ("lightgcn", "none"), ("vbpr", "attention"), ("freedom", "attention"), ("bm3", "mean")],
)
def test_backbones_learn_the_planted_structure(name, mode, split, content) -> None:
    config = TrainConfig(epochs=15, patience=15, batch_size=256, device="cpu")
    spec = ModelSpec(name=name, content_mode=mode, hparams={"learning_rate": 0.01})
    experiment = run_experiment(split, content, spec, config, seed=0, progress=False)
    assert experiment.metrics["test"]["recall@10"] > 3 * random_recall(split)
    if MODELS[name].multimodal:
        cold = experiment.metrics["cold"]
        assert cold["cold_only"]["recall@10"] > 2 * random_recall(split, candidates=len(split.cold_items))
        assert cold["all"]["recall@10"] > 3 * random_recall(split, candidates=split.n_items)
    else:
        assert experiment.metrics["cold"] is None


@pytest.mark.parametrize("name", MULTIMODAL)
def test_cold_vectors_are_stretched_about_the_warm_mean(name, graph, content) -> None:
    """The calibrated cold vector is `center + scale * (raw - center)`: each user's order of the
    cold items is the raw one, only their place among warm items moves."""
    torch.manual_seed(0)
    model = build_model(default_spec(name), graph, content).fit_cold_map()
    cold, warm = torch.from_numpy(graph.cold_items), torch.from_numpy(graph.warm_items)
    with torch.no_grad():
        raw = model.raw_content_item_vectors(content.image[cold], content.text_views[cold])
        calibrated = model.content_item_vectors(content.image[cold], content.text_views[cold])
        users = model.user_vectors()
        torch.testing.assert_close(model.cold_center, model.trained_item_vectors()[warm].mean(dim=0))
    assert model.cold_scale > 0 and model.cold_ridge in model.hparams.cold_ridges
    torch.testing.assert_close(calibrated, model.cold_center + model.cold_scale * (raw - model.cold_center))
    assert ((users @ raw.T).argsort(dim=1) == (users @ calibrated.T).argsort(dim=1)).all()


def test_cold_scale_matches_the_score_spread_of_held_out_warm_items(graph, content) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(name="vbpr", content_mode="mean", hparams={"cold_ridges": [0.1]})
    model = build_model(spec, graph, content).fit_cold_map()
    warm = torch.from_numpy(graph.warm_items)
    with torch.no_grad():
        users = model.user_vectors()
        features = torch.cat(model.encoder.map_input(content.image[warm], content.text_views[warm]), dim=-1)
        folds = warm_folds(len(warm), model.hparams.cold_folds)
        statistics = fold_statistics(features, model.id_part()[warm], folds)
        held_out = model.held_out_path()(cross_validate(features, statistics, 0.1, folds))
        spread = lambda items: (users @ items.T - (users @ items.T).mean(dim=1, keepdim=True)).norm()  # noqa: E731
        expected = spread(model.trained_item_vectors()[warm]) / spread(held_out)
    torch.testing.assert_close(model.cold_scale, expected)
    assert model.cold_ridge == 0.1


@pytest.mark.parametrize(("name", "mode"), [("freedom", "attention"), ("vbpr", "attention"), ("bm3", "mean")])
def test_trained_cold_vectors_score_with_the_spread_of_warm_vectors(name, mode, split) -> None:
    """With weakly informative content the ridge estimate regresses to the mean: before the
    calibration, cold items' scores spread 0.67 (bm3) to 0.82 (freedom) times as widely as warm
    items' here, so they seldom reach a top-K among warm items (issue 3's cold-start failure)."""
    content = WORLD.content(noise=4.0)
    config = TrainConfig(epochs=15, patience=15, batch_size=256, device="cpu")
    spec = ModelSpec(name=name, content_mode=mode, hparams={"learning_rate": 0.01})
    graph = InteractionGraph.from_split(split)
    model, _ = train_model(spec, graph, content, Evaluator(split), config, seed=0, progress=False)
    users, items = model_vectors(model)

    def spread(vectors: torch.Tensor) -> float:
        scores = users @ vectors.T
        return ((scores - scores.mean(dim=1, keepdim=True)).norm() / len(vectors) ** 0.5).item()

    ratio = spread(items[torch.from_numpy(graph.cold_items)]) / spread(items[torch.from_numpy(graph.warm_items)])
    assert 0.9 < ratio < 1.5


@pytest.mark.parametrize("mode", ["attention", "mean", "sum"])
def test_cold_map_reads_weighted_views_side_by_side(mode, content) -> None:
    """For a weighted-sum fusion the cold map gets `[w_1 x_1, ..., w_V x_V]`, whose view blocks
    sum to the fused text: a map of the fused text is the special case of one shared matrix."""
    encoder = ContentEncoder(mode, content.views, content.image_dim, content.text_dim, tau=0.2)
    image, views = content.image[:6], content.text_views[:6]
    map_image, side_by_side = encoder.map_input(image, views)
    fused_image, fused = encoder(image, views)
    assert side_by_side.shape == (6, len(content.views) * content.text_dim)
    assert [map_image.shape[1], side_by_side.shape[1]] == encoder.map_dims
    torch.testing.assert_close(map_image, fused_image)
    torch.testing.assert_close(side_by_side.view(6, len(content.views), -1).sum(dim=1), fused)


@pytest.mark.parametrize("mode", ["image", "global", "concat", "mlp"])
def test_cold_map_reads_other_modalities_as_they_are(mode, content) -> None:
    encoder = ContentEncoder(mode, content.views, content.image_dim, content.text_dim, tau=0.2)
    image, views = content.image[:6], content.text_views[:6]
    for mapped, modality in zip(encoder.map_input(image, views), encoder(image, views), strict=True):
        torch.testing.assert_close(mapped, modality)
    assert encoder.map_dims == encoder.modality_dims


@pytest.mark.parametrize("name", ["freedom", "vbpr"])
def test_alpha_zero_reproduces_the_mean_exactly(name, split, content) -> None:
    """Attention mixed with alpha = 0 is the mean of the views: the same fused feature, and
    after the same training the same item vectors, warm and cold, bit for bit (issue 18)."""
    config = TrainConfig(epochs=3, patience=3, batch_size=256, device="cpu")
    graph = InteractionGraph.from_split(split)
    models = {}
    for mode in ("mean", "attention", "attention_calibrated"):
        alpha = {} if mode == "mean" else {"view_alpha": 0.0}
        spec = ModelSpec(name=name, content_mode=mode, tau=0.1, hparams={"learning_rate": 0.01, **alpha})
        models[mode], _ = train_model(spec, graph, content, Evaluator(split), config, seed=0, progress=False)
    mean = models.pop("mean")
    with torch.no_grad():
        for model in models.values():
            assert all(torch.equal(a, b) for a, b in zip(model.item_content(), mean.item_content(), strict=True))
            assert torch.equal(model.item_vectors(), mean.item_vectors())
            cold = torch.from_numpy(graph.cold_items)
            assert torch.equal(model.content_view_weights(content.image[cold], content.text_views[cold]),
                               mean.content_view_weights(content.image[cold], content.text_views[cold]))


def test_calibrated_statistics_come_from_the_training_items(graph, content) -> None:
    model = build_model(ModelSpec(name="freedom", content_mode="attention_calibrated"), graph, content)
    warm = graph.warm_items
    views = content.text_views.numpy()[warm]
    image = content.image.numpy()[warm]
    cosine = np.einsum("bvd,bd->bv", views / np.linalg.norm(views, axis=-1, keepdims=True),
                       image / np.linalg.norm(image, axis=-1, keepdims=True))
    fusion = model.encoder.fusion
    np.testing.assert_allclose(fusion.view_cosine_mean.numpy(), cosine.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(fusion.view_cosine_std.numpy(), cosine.std(axis=0), atol=1e-6)
    assert {"encoder.fusion.view_cosine_mean", "encoder.fusion.view_cosine_std"} <= model.state_dict().keys()
