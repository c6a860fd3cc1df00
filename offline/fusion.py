"""CLIPER view fusion: turn an item's V text-view embeddings into one text feature.

`attention` is the CLIPER rule: each view is weighted by softmax over views of
cos(view, image) / tau, and the fused feature is the weighted sum of the (raw, un-normalised)
view embeddings. `attention_calibrated` standardises each view's cosine first,
(cos_v - mean_v) / std_v with the view's mean and std over the training items
(`fit_cosine_statistics`, buffers saved with the model and baked into the item tower): a
view's cosine mixes how visible that kind of text is in any photo (its level, e.g. a brand is
rarely visible) with the item's own agreement with its photo, and the z-score keeps only the
second. `attention_prior` adds a learned per-view bias to the logits, softmax(cos / tau + b_v),
trained with the backbone from b = 0 (plain CLIPER). Every attention mode mixes its weights
with uniform ones, `w = alpha * attention + (1 - alpha) / V`, so alpha = 0 is exactly the mean
of the views. The other modes are the paper's baselines: `mean`, `sum`, `concat` (all views
side by side), `mlp` (concat followed by a learned linear layer, trained with the backbone) and
`global` (the global view alone, always the last view).

The mode is fixed at construction, so `forward` has no data-dependent Python branches and
traces into ONNX.
"""

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cliper.manifest import ATTENTION_MODES

FusionMode = Literal["attention", "attention_calibrated", "attention_prior", "mean", "sum", "concat", "mlp", "global"]
FUSION_MODES: tuple[str, ...] = get_args(FusionMode)
CALIBRATED = "attention_calibrated"
MIN_COSINE_STD = 1e-6  # a view whose cosine never varies is standardised by this instead of 0


def view_cosines(text_views: Tensor, image: Tensor) -> Tensor:
    """`(B, V)`: cos(view, image) of each view of each item."""
    return torch.einsum("bvd,bd->bv", F.normalize(text_views, dim=-1), F.normalize(image, dim=-1))


class ViewFusion(nn.Module):
    """Fuse `text_views (B, V, Dt)` (with `image (B, Di)` for attention) into `(B, out_dim)`."""

    def __init__(
        self,
        mode: FusionMode,
        n_views: int,
        text_dim: int,
        image_dim: int,
        tau: float = 0.2,
        alpha: float = 1.0,
    ):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {mode!r}; choose one of {FUSION_MODES}")
        if n_views < 1:
            raise ValueError("fusion needs at least one text view")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha (the attention's share of the view weights) must lie in [0, 1], got {alpha}")
        if mode in ATTENTION_MODES and image_dim != text_dim:
            raise ValueError(
                f"attention fusion compares views with the image, so both need the same CLIP "
                f"dimension; got text {text_dim} and image {image_dim}"
            )
        self.mode = mode
        self.n_views = n_views
        self.text_dim = text_dim
        self.tau = tau
        self.alpha = alpha
        self.mlp = nn.Linear(n_views * text_dim, text_dim) if mode == "mlp" else None
        self.prior = nn.Parameter(torch.zeros(n_views)) if mode == "attention_prior" else None
        if mode == CALIBRATED:  # identity until `fit_cosine_statistics`
            self.register_buffer("view_cosine_mean", torch.zeros(n_views))
            self.register_buffer("view_cosine_std", torch.ones(n_views))

    @property
    def out_dim(self) -> int:
        return self.n_views * self.text_dim if self.mode == "concat" else self.text_dim

    @property
    def learned(self) -> bool:
        """Whether the fused feature depends on trained parameters (and so changes in training)."""
        return self.mlp is not None or self.prior is not None

    @property
    def calibrated(self) -> bool:
        return self.mode == CALIBRATED

    def settings(self) -> dict[str, float | list[float] | None]:
        """What the manifest records of this fusion (`cliper.manifest.Fusion`): tau and alpha
        where attention uses them, the cosine statistics where it standardises."""
        attention = self.mode in ATTENTION_MODES
        return {
            "tau": self.tau if attention else None,
            "alpha": self.alpha if attention else None,
            "view_cosine_mean": self.view_cosine_mean.tolist() if self.calibrated else None,
            "view_cosine_std": self.view_cosine_std.tolist() if self.calibrated else None,
        }

    @torch.no_grad()
    def fit_cosine_statistics(self, text_views: Tensor, image: Tensor) -> None:
        """Set each view's cosine mean and std (population) over the given items, the catalog's
        training items: the standardisation of `attention_calibrated`."""
        if not self.calibrated:
            raise ValueError(f"only {CALIBRATED!r} standardises the cosines; this fusion is {self.mode!r}")
        cosine = view_cosines(text_views, image)
        self.view_cosine_mean.copy_(cosine.mean(dim=0))
        self.view_cosine_std.copy_(cosine.std(dim=0, correction=0).clamp_min(MIN_COSINE_STD))

    def view_weights(self, text_views: Tensor, image: Tensor) -> Tensor:
        """Per-item weight of each view `(B, V)`: the attention softmax mixed with uniform
        weights by alpha, or the weights a fixed mode implies (uniform for mean/concat/mlp, ones
        for sum, one-hot for global)."""
        batch = text_views.shape[0]
        if self.mode in ATTENTION_MODES:
            cosine = view_cosines(text_views, image)
            if self.calibrated:
                cosine = (cosine - self.view_cosine_mean) / self.view_cosine_std
            logits = cosine / self.tau
            if self.prior is not None:
                logits = logits + self.prior
            weights = torch.softmax(logits, dim=1)
            if self.alpha == 1.0:
                return weights
            return self.alpha * weights + (1.0 - self.alpha) / self.n_views
        if self.mode == "global":
            weights = torch.zeros(batch, self.n_views, dtype=text_views.dtype, device=text_views.device)
            weights[:, -1] = 1.0
            return weights
        fill = 1.0 if self.mode == "sum" else 1.0 / self.n_views
        return torch.full((batch, self.n_views), fill, dtype=text_views.dtype, device=text_views.device)

    def forward(self, text_views: Tensor, image: Tensor) -> Tensor:
        if self.mode == "concat":
            return text_views.flatten(1)
        if self.mode == "mlp":
            return self.mlp(text_views.flatten(1))
        if self.mode == "global":
            return text_views[:, -1]
        weights = self.view_weights(text_views, image)
        return (weights.unsqueeze(-1) * text_views).sum(dim=1)
