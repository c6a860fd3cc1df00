"""Backbone registry: an explicit name -> class table, and `build_model` from a `ModelSpec`."""

from typing import Any

from pydantic import Field

from offline.config import ConfigError, StrictModel
from offline.models.base import ColdStartUnsupported, InteractionGraph, Recommender
from offline.models.bm3 import BM3
from offline.models.bpr import BPR
from offline.models.content_encoder import CONTENT_MODES, ID_ONLY, MULTIMODAL_MODES, ContentMode
from offline.models.features import ContentFeatures
from offline.models.freedom import FREEDOM
from offline.models.hparams import load_hparams
from offline.models.lightgcn import LightGCN
from offline.models.vbpr import VBPR

MODELS: dict[str, type[Recommender]] = {
    "bpr": BPR,
    "lightgcn": LightGCN,
    "vbpr": VBPR,
    "freedom": FREEDOM,
    "bm3": BM3,
}

__all__ = [
    "CONTENT_MODES",
    "ID_ONLY",
    "MODELS",
    "MULTIMODAL_MODES",
    "ColdStartUnsupported",
    "ContentFeatures",
    "InteractionGraph",
    "ModelSpec",
    "Recommender",
    "build_model",
]


class ModelSpec(StrictModel):
    """Everything needed to rebuild a backbone, besides the data: saved in every checkpoint."""

    name: str = "freedom"
    content_mode: ContentMode = "attention"
    tau: float = Field(default=0.2, gt=0)
    hparams: dict[str, Any] = Field(default_factory=dict, description="overrides of the model's YAML")

    def model_class(self) -> type[Recommender]:
        if self.name not in MODELS:
            raise ConfigError(f"unknown model {self.name!r}; choose one of {sorted(MODELS)}")
        return MODELS[self.name]

    def check(self) -> "ModelSpec":
        """Reject a content mode the backbone cannot use."""
        model = self.model_class()
        if model.multimodal and self.content_mode == ID_ONLY:
            raise ConfigError(f"{self.name} is multi-modal: content_mode must be one of {MULTIMODAL_MODES}")
        if not model.multimodal and self.content_mode != ID_ONLY:
            raise ConfigError(f"{self.name} is ID-only: content_mode must be {ID_ONLY!r}, got {self.content_mode!r}")
        return self


def build_model(spec: ModelSpec, graph: InteractionGraph, content: ContentFeatures | None = None) -> Recommender:
    """A fresh backbone; multi-modal ones need `content` aligned to the split's items."""
    model = spec.check().model_class()
    hparams = load_hparams(spec.name, model.HParams, spec.hparams)
    if not model.multimodal:
        return model(graph, hparams)
    if content is None:
        raise ConfigError(f"{spec.name} is multi-modal and needs content features (set `features`)")
    return model(graph, hparams, content, spec.content_mode, spec.tau)
