"""How well CLIP's image and text embeddings agree: retrieval recall and CLIPER's view weights.

The functions work on raw embeddings and normalise them here, so they can be run on any
features. `weight_summary` says, per view, what a user needs to judge the view weights: the
mean weight and the share of items whose weight is below half the uniform weight (the views
the weights silence); on a synthetic world (`planted_lies`), separately for the items whose
field lies and those whose field is truthful.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

KS = (1, 5)
NOISE_FILE = "noise.csv"  # the synthetic world's record of its planted noise (offline.data.synth)


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


def view_cosines(text_views: np.ndarray, image: np.ndarray) -> np.ndarray:
    """`text_views` (V, N, D), `image` (N, D) -> (V, N): cos(view, image)."""
    return np.einsum("vnd,nd->vn", normalize(text_views), normalize(image))


def view_attention(
    text_views: np.ndarray, image: np.ndarray, tau: float = 0.2, calibrated: bool = False, alpha: float = 1.0
) -> np.ndarray:
    """CLIPER's view weights before any training: softmax over views of cos(view, image) / tau;
    `calibrated` standardises each view's cosine over these items first (z-score), as
    `attention_calibrated` does over the training items; mixed with uniform weights by `alpha`.

    `text_views` (V, N, D), `image` (N, D) -> (V, N), each column summing to 1.
    """
    cosine = view_cosines(text_views, image)
    if calibrated:
        cosine = (cosine - cosine.mean(axis=1, keepdims=True)) / np.maximum(cosine.std(axis=1, keepdims=True), 1e-6)
    logits = cosine / tau
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    weights = weights / weights.sum(axis=0, keepdims=True)
    return alpha * weights + (1 - alpha) / len(weights)


def _stats(weights: np.ndarray, half_uniform: float) -> dict[str, float]:
    return {
        "mean": float(weights.mean()) if len(weights) else float("nan"),
        "below_half_uniform": float((weights < half_uniform).mean()) if len(weights) else float("nan"),
        "items": len(weights),
    }


def weight_summary(
    weights: np.ndarray, views: Sequence[str], lies: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
) -> dict[str, dict[str, Any]]:
    """Per view of `weights` (N items, V views): the mean weight and the share of items below
    half the uniform weight 1/V; for a view in `lies` (view -> (lying, truthful) item masks),
    the same two over its lying and over its truthful items."""
    half_uniform = 0.5 / len(views)
    summary: dict[str, dict[str, Any]] = {}
    for v, view in enumerate(views):
        summary[view] = _stats(weights[:, v], half_uniform)
        if lies is not None and view in lies:
            lying, truthful = lies[view]
            summary[view]["lying"] = _stats(weights[lying, v], half_uniform)
            summary[view]["truthful"] = _stats(weights[truthful, v], half_uniform)
    return summary


def planted_lies(
    data: Path, item_ids: Sequence[str], views: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """On a synthetic world (a catalog folder with `noise.csv`), per view that lies for some
    item: boolean masks over `item_ids` of the items whose field lies (copied from another
    item) and of those whose field is truthful (its own, and not empty). None elsewhere."""
    path = Path(data) / NOISE_FILE
    if not path.is_file():
        return None
    noise = pd.read_csv(path, dtype={"item_id": str}).set_index("item_id").reindex(list(item_ids))
    lies = {}
    for view in views:
        column = f"{view}_misleading"
        if column not in noise.columns:
            continue
        lying = noise[column].fillna(False).astype(bool).to_numpy()
        if not lying.any():
            continue
        empty = noise.get(f"{view}_empty", pd.Series(False, index=noise.index)).fillna(False).astype(bool)
        lies[view] = (lying, ~lying & ~empty.to_numpy() & noise[column].notna().to_numpy())
    return lies or None


def format_weight_summary(summary: dict[str, dict[str, Any]], title: str) -> list[str]:
    """`weight_summary` as lines a user can read: one row per view, then the lying/truthful
    rows of the views that lie on a synthetic world."""
    n_views = len(summary)
    lines = [
        f"{title}: mean weight per view, and the share of items below half the uniform weight "
        f"(1/{n_views} / 2 = {0.5 / n_views:.3f})",
        f"  {'view':<14}{'weight':>8}{'< half':>8}",
    ]
    lines += [f"  {view:<14}{row['mean']:>8.3f}{row['below_half_uniform']:>8.3f}" for view, row in summary.items()]
    lying = {view: row for view, row in summary.items() if "lying" in row}
    if lying:
        lines.append(f"  planted lies ({NOISE_FILE}): the same over the items whose field lies, and those whose field "
                     "is truthful")
        lines.append(f"  {'view':<14}{'lying':>8}{'< half':>8}{'items':>7}{'truthful':>10}{'< half':>8}{'items':>7}")
        for view, row in lying.items():
            lie, true = row["lying"], row["truthful"]
            lines.append(f"  {view:<14}{lie['mean']:>8.3f}{lie['below_half_uniform']:>8.3f}{lie['items']:>7}"
                         f"{true['mean']:>10.3f}{true['below_half_uniform']:>8.3f}{true['items']:>7}")
    return lines
