"""How well CLIP's image and text embeddings agree: retrieval recall and CLIPER's view weights.

Both work on raw embeddings and normalise them here, so they can be run on any features.
"""

import numpy as np

KS = (1, 5)


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def image_to_text_recall(
    image: np.ndarray,
    text: np.ndarray,
    target: np.ndarray | None = None,
    ks: tuple[int, ...] = KS,
) -> dict[str, float]:
    """Each image queries all m texts; Recall@k that its `target` text (default: text i) is in
    the top k, and chance k/m. Give distinct texts: a duplicate of the target would tie it."""
    target = np.arange(len(image)) if target is None else np.asarray(target)
    similarity = normalize(image) @ normalize(text).T
    correct = similarity[np.arange(len(image)), target]
    rank = (similarity > correct[:, None]).sum(axis=1)  # 0 = best
    report: dict[str, float] = {"queries": len(image), "texts": len(text)}
    for k in ks:
        report[f"r{k}"] = float((rank < k).mean())
        report[f"chance_r{k}"] = min(k / len(text), 1.0)
    return report


def view_attention(text_views: np.ndarray, image: np.ndarray, tau: float = 0.2) -> np.ndarray:
    """CLIPER's view weights before any training: softmax over views of cos(view, image) / tau.

    `text_views` (V, N, D), `image` (N, D) -> (V, N), each column summing to 1.
    """
    cosine = np.einsum("vnd,nd->vn", normalize(text_views), normalize(image))
    logits = cosine / tau
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    return weights / weights.sum(axis=0, keepdims=True)
