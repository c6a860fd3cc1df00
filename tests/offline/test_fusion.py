"""CLIPER view fusion: attention weights, the baseline modes, shapes, gradients, ONNX export."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from offline.fusion import ViewFusion

B, V, D = 6, 4, 8


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(B, V, D, generator=generator), torch.randn(B, D, generator=generator)


@pytest.mark.parametrize("mode", ["attention", "attention_prior", "mean", "global", "concat", "mlp"])
def test_weights_sum_to_one(mode: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    weights = ViewFusion(mode, V, D, D).view_weights(*batch)
    assert weights.shape == (B, V)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(B))


def test_implied_weights_of_fixed_modes(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.testing.assert_close(ViewFusion("mean", V, D, D).view_weights(*batch), torch.full((B, V), 1 / V))
    torch.testing.assert_close(ViewFusion("sum", V, D, D).view_weights(*batch), torch.ones(B, V))
    one_hot = torch.zeros(B, V)
    one_hot[:, -1] = 1
    torch.testing.assert_close(ViewFusion("global", V, D, D).view_weights(*batch), one_hot)


def test_view_equal_to_image_gets_the_largest_weight(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    views, image = batch
    views = views.clone()
    views[:, 2] = image * 3.0  # same direction, different norm: cosine 1
    weights = ViewFusion("attention", V, D, D, tau=0.2).view_weights(views, image)
    assert (weights.argmax(dim=1) == 2).all()


def test_attention_is_softmax_of_cosine_over_tau(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    views, image = batch
    fusion = ViewFusion("attention", V, D, D, tau=0.5)
    cosine = torch.stack([F.cosine_similarity(views[:, v], image, dim=-1) for v in range(V)], dim=1)
    expected_weights = torch.softmax(cosine / 0.5, dim=1)
    torch.testing.assert_close(fusion.view_weights(views, image), expected_weights)
    torch.testing.assert_close(fusion(views, image), (expected_weights.unsqueeze(-1) * views).sum(dim=1))


def test_small_tau_picks_one_view(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    views, image = batch
    weights = ViewFusion("attention", V, D, D, tau=1e-4).view_weights(views, image)
    assert torch.allclose(weights.max(dim=1).values, torch.ones(B), atol=1e-5)
    fused = ViewFusion("attention", V, D, D, tau=1e-4)(views, image)
    torch.testing.assert_close(fused, views[torch.arange(B), weights.argmax(dim=1)], atol=1e-4, rtol=1e-4)


def test_large_tau_tends_to_the_mean(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    fused = ViewFusion("attention", V, D, D, tau=1e6)(*batch)
    torch.testing.assert_close(fused, ViewFusion("mean", V, D, D)(*batch), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("mode", "out_dim"), [("attention", D), ("mean", D), ("sum", D), ("concat", V * D), ("mlp", D), ("global", D)]
)
def test_output_shapes(mode: str, out_dim: int, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    fusion = ViewFusion(mode, V, D, D)
    assert fusion.out_dim == out_dim
    assert fusion(*batch).shape == (B, out_dim)


def test_fixed_modes_values(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    views, image = batch
    torch.testing.assert_close(ViewFusion("mean", V, D, D)(views, image), views.mean(dim=1))
    torch.testing.assert_close(ViewFusion("sum", V, D, D)(views, image), views.sum(dim=1))
    torch.testing.assert_close(ViewFusion("global", V, D, D)(views, image), views[:, -1])
    torch.testing.assert_close(ViewFusion("concat", V, D, D)(views, image), views.reshape(B, V * D))


def test_non_attention_modes_accept_other_image_sizes(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    views, _ = batch
    fusion = ViewFusion("mean", V, D, image_dim=5)
    assert fusion(views, torch.randn(B, 5)).shape == (B, D)
    with pytest.raises(ValueError, match="same CLIP"):
        ViewFusion("attention", V, D, image_dim=5)


def test_mlp_is_learned_and_gradients_flow(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    fusion = ViewFusion("mlp", V, D, D)
    assert fusion.learned and not ViewFusion("attention", V, D, D).learned
    fusion(*batch).pow(2).sum().backward()
    assert fusion.mlp.weight.grad is not None and fusion.mlp.weight.grad.abs().sum() > 0


def test_the_view_prior_starts_as_plain_cliper_and_learns(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    fusion = ViewFusion("attention_prior", V, D, D, tau=0.2)
    assert fusion.learned
    torch.testing.assert_close(fusion.view_weights(*batch), ViewFusion("attention", V, D, D, tau=0.2).view_weights(*batch))
    fusion(*batch)[:, 0].sum().backward()
    assert fusion.prior.grad is not None and fusion.prior.grad.abs().sum() > 0
    with torch.no_grad():
        fusion.prior[1] = 10.0  # a prior this strong outweighs any image agreement
    assert (fusion.view_weights(*batch).argmax(dim=1) == 1).all()


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown fusion mode"):
        ViewFusion("max", V, D, D)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tau"):
        ViewFusion("attention", V, D, D, tau=0.0)


@pytest.mark.parametrize("mode", ["attention", "attention_prior", "mlp"])  # the modes with computation in them
def test_exports_to_onnx(mode: str, batch: tuple[torch.Tensor, torch.Tensor], tmp_path) -> None:
    views, image = batch
    fusion = ViewFusion(mode, V, D, D).eval()
    path = tmp_path / "fusion.onnx"
    batch_dim = torch.export.Dim("batch")
    torch.onnx.export(
        fusion,
        (views, image),
        str(path),
        input_names=["text_views", "image"],
        dynamic_shapes=({0: batch_dim}, {0: batch_dim}),
        verbose=False,
    )
    session = ort.InferenceSession(str(path))
    names = [node.name for node in session.get_inputs()]
    more_views, more_images = torch.randn(3, V, D), torch.randn(3, D)
    feed = {"text_views": more_views.numpy(), "image": more_images.numpy()}
    (fused,) = session.run(None, {name: feed[name] for name in names})
    np.testing.assert_allclose(fused, fusion(more_views, more_images).detach().numpy(), atol=1e-5)


def _numpy_cosines(views: torch.Tensor, image: torch.Tensor) -> np.ndarray:
    v, i = views.double().numpy(), image.double().numpy()
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    i = i / np.linalg.norm(i, axis=-1, keepdims=True)
    return np.einsum("bvd,bd->bv", v, i)


def _numpy_softmax(logits: np.ndarray) -> np.ndarray:
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def test_calibrated_attention_standardises_each_views_cosine_over_the_fitted_items() -> None:
    """z-score per view with the catalog's statistics, then the softmax at tau."""
    generator = torch.Generator().manual_seed(5)
    catalog_views, catalog_image = torch.randn(50, V, D, generator=generator), torch.randn(50, D, generator=generator)
    catalog_views[:, 1] += 2 * catalog_image  # view 1 agrees with every picture: a high level of its own
    fusion = ViewFusion("attention_calibrated", V, D, D, tau=0.7)
    fusion.fit_cosine_statistics(catalog_views, catalog_image)
    cosine = _numpy_cosines(catalog_views, catalog_image)
    np.testing.assert_allclose(fusion.view_cosine_mean.numpy(), cosine.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(fusion.view_cosine_std.numpy(), cosine.std(axis=0), atol=1e-6)
    new_views, new_image = torch.randn(7, V, D, generator=generator), torch.randn(7, D, generator=generator)
    z = (_numpy_cosines(new_views, new_image) - cosine.mean(axis=0)) / cosine.std(axis=0)
    np.testing.assert_allclose(fusion.view_weights(new_views, new_image).numpy(), _numpy_softmax(z / 0.7), atol=1e-6)
    # the plain attention favours the view with the high level on the catalog; the calibrated one does not
    plain = ViewFusion("attention", V, D, D, tau=0.7).view_weights(catalog_views, catalog_image)
    calibrated = fusion.view_weights(catalog_views, catalog_image)
    assert plain[:, 1].mean() > 0.5 and calibrated[:, 1].mean() < 0.5


@pytest.mark.parametrize("mode", ["attention", "attention_calibrated"])
def test_alpha_mixes_attention_with_uniform_weights(mode: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    views, image = batch
    attention = ViewFusion(mode, V, D, D, tau=0.3).view_weights(views, image)
    mixed = ViewFusion(mode, V, D, D, tau=0.3, alpha=0.4).view_weights(views, image)
    torch.testing.assert_close(mixed, 0.4 * attention + 0.6 / V)


@pytest.mark.parametrize("mode", ["attention", "attention_calibrated"])
def test_alpha_zero_is_exactly_the_mean(mode: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    views, image = batch
    fusion = ViewFusion(mode, V, D, D, tau=0.1, alpha=0.0)
    mean = ViewFusion("mean", V, D, D)
    assert torch.equal(fusion.view_weights(views, image), mean.view_weights(views, image))
    assert torch.equal(fusion(views, image), mean(views, image))


def test_bad_alpha_is_rejected() -> None:
    with pytest.raises(ValueError, match="alpha"):
        ViewFusion("attention", V, D, D, alpha=1.5)
    with pytest.raises(ValueError, match="standardises"):
        ViewFusion("attention", V, D, D).fit_cosine_statistics(torch.randn(3, V, D), torch.randn(3, D))


def test_calibrated_attention_exports_with_its_statistics(batch: tuple[torch.Tensor, torch.Tensor], tmp_path) -> None:
    views, image = batch
    fusion = ViewFusion("attention_calibrated", V, D, D, tau=0.5, alpha=0.5).eval()
    fusion.fit_cosine_statistics(views, image)
    path = tmp_path / "fusion.onnx"
    torch.onnx.export(fusion, (views, image), str(path), input_names=["text_views", "image"],
                      dynamic_axes={"text_views": {0: "b"}, "image": {0: "b"}}, dynamo=False)
    more_views, more_images = torch.randn(3, V, D), torch.randn(3, D)
    (fused,) = ort.InferenceSession(str(path)).run(None, {"text_views": more_views.numpy(), "image": more_images.numpy()})
    np.testing.assert_allclose(fused, fusion(more_views, more_images).detach().numpy(), atol=1e-5)
