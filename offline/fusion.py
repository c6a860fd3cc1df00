"""CLIPER view fusion: turn an item's V text-view embeddings into one text feature.

`attention` is the CLIPER rule: each view is weighted by softmax over views of
cos(view, image) / tau, and the fused feature is the weighted sum of the (raw, un-normalised)
view embeddings. `attention_prior` adds a learned per-view bias to those logits,
softmax(cos / tau + b_v), trained with the backbone from b = 0 (plain CLIPER): image agreement
still silences a view that contradicts the picture, while a clean view the picture cannot
show (a brand name) can keep weight if it helps ranking. The other modes are the paper's
baselines: `mean`, `sum`, `concat` (all views side by side), `mlp` (concat followed by a
learned linear layer, trained with the backbone) and `global` (the global view alone, always
the last view).

The mode is fixed at construction, so `forward` has no data-dependent Python branches and
traces into ONNX.
"""

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cliper.manifest import ATTENTION_MODES

FusionMode = Literal["attention", "attention_prior", "mean", "sum", "concat", "mlp", "global"]
FUSION_MODES: tuple[str, ...] = get_args(FusionMode)


class ViewFusion(nn.Module):
    """Fuse `text_views (B, V, Dt)` (with `image (B, Di)` for attention) into `(B, out_dim)`."""

    def __init__(self, mode: FusionMode, n_views: int, text_dim: int, image_dim: int, tau: float = 0.2):
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {mode!r}; choose one of {FUSION_MODES}")
        if n_views < 1:
            raise ValueError("fusion needs at least one text view")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if mode in ATTENTION_MODES and image_dim != text_dim:
            raise ValueError(
                f"attention fusion compares views with the image, so both need the same CLIP "
                f"dimension; got text {text_dim} and image {image_dim}"
            )
        self.mode = mode
        self.n_views = n_views
        self.text_dim = text_dim
        self.tau = tau
        self.mlp = nn.Linear(n_views * text_dim, text_dim) if mode == "mlp" else None
        self.prior = nn.Parameter(torch.zeros(n_views)) if mode == "attention_prior" else None

    @property
    def out_dim(self) -> int:
        return self.n_views * self.text_dim if self.mode == "concat" else self.text_dim

    @property
    def learned(self) -> bool:
        """Whether the fused feature depends on trained parameters (and so changes in training)."""
        return self.mlp is not None or self.prior is not None

    def view_weights(self, text_views: Tensor, image: Tensor) -> Tensor:
        """Per-item weight of each view `(B, V)`: the attention softmax, or the weights a
        fixed mode implies (uniform for mean/concat/mlp, ones for sum, one-hot for global)."""
        batch = text_views.shape[0]
        if self.mode in ATTENTION_MODES:
            cosine = torch.einsum("bvd,bd->bv", F.normalize(text_views, dim=-1), F.normalize(image, dim=-1))
            logits = cosine / self.tau
            if self.prior is not None:
                logits = logits + self.prior
            return torch.softmax(logits, dim=1)
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
