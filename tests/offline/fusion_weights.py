"""CLIPER view weights in numpy from a bundle manifest's fusion record, independent of torch."""

import numpy as np

from cliper.manifest import Fusion


def cosines(image: np.ndarray, views: np.ndarray) -> np.ndarray:
    """`image (B, D)`, `views (B, V, D)` -> `(B, V)` cos(view, image), in float64."""
    image = image / np.linalg.norm(image, axis=-1, keepdims=True)
    views = views / np.linalg.norm(views, axis=-1, keepdims=True)
    return np.einsum("bvd,bd->bv", views.astype(np.float64), image.astype(np.float64))


def manifest_view_weights(image: np.ndarray, views: np.ndarray, fusion: Fusion) -> np.ndarray:
    """alpha * softmax(z / tau) + (1 - alpha) / V, with z the cosine standardised by the
    manifest's per-view statistics (the raw cosine when it has none)."""
    logits = cosines(image, views)
    if fusion.view_cosine_mean is not None:
        logits = (logits - np.asarray(fusion.view_cosine_mean)) / np.asarray(fusion.view_cosine_std)
    logits = logits / fusion.tau
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    alpha = 1.0 if fusion.alpha is None else fusion.alpha
    return alpha * weights + (1 - alpha) / weights.shape[1]
