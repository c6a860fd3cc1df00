"""The view fusion chosen on validation (issue 18): a small grid of CLIPER attentions and the mean.

CLIPER's attention (softmax over views of cos(view, image) / tau) helps on some catalogs and
CLIP runs and trails the plain mean of the views on others, so a run with content mode
`validated` (the pipeline's default) trains one model per fusion of a small grid and keeps the
one with the best validation Recall@20 (the metric early stopping uses):

- tau, the softmax temperature;
- calibration on or off (`attention_calibrated`: each view's cosine standardised over the
  training items);
- alpha, the attention's share of the weights, `w = alpha * attention + (1 - alpha) / V`.

Alpha 0 is the mean of the views whatever tau and calibration, so it is one cell, trained as
the `mean` mode (the same weights exactly), listed first so that a tie keeps it.
"""

from typing import Any

from pydantic import Field, field_validator

from cliper.manifest import Fusion, FusionCandidate
from offline.config import StrictModel
from offline.fusion import CALIBRATED
from offline.models import ModelSpec, Recommender
from offline.models.content import ContentParams, ContentRecommender
from offline.train.evaluate import VALID_METRIC

VALIDATED = "validated"  # the content mode that chooses the fusion on validation
PLAIN = "attention"
MEAN = "mean"
ALPHA = "view_alpha"  # the hyper-parameter that holds alpha (ContentParams)
DEFAULT_ALPHA: float = ContentParams.model_fields[ALPHA].default


class FusionGrid(StrictModel):
    """The fusions a `validated` run chooses among."""

    taus: list[float] = Field(default_factory=lambda: [0.1, 0.5, 1.0], min_length=1)
    alphas: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0], min_length=1)
    calibration: list[bool] = Field(default_factory=lambda: [False, True], min_length=1)

    @field_validator("taus")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(value <= 0 for value in values):
            raise ValueError(f"taus must all be > 0, got {values}")
        return values

    @field_validator("alphas")
    @classmethod
    def _share(cls, values: list[float]) -> list[float]:
        if any(not 0 <= value <= 1 for value in values):
            raise ValueError(f"alphas must all lie in [0, 1], got {values}")
        return values

    def candidates(self, base: ModelSpec) -> list[ModelSpec]:
        """Every distinct fusion of the grid on `base`'s backbone and hyper-parameters, the
        mean first (alpha 0, whatever tau and calibration)."""
        specs = []
        if 0 in self.alphas:
            specs.append(fusion_spec(base, MEAN, base.tau, None))
        for calibrated in dict.fromkeys(self.calibration):
            for tau in dict.fromkeys(self.taus):
                for alpha in dict.fromkeys(alpha for alpha in self.alphas if alpha > 0):
                    specs.append(fusion_spec(base, CALIBRATED if calibrated else PLAIN, tau, alpha))
        return specs


def fusion_spec(base: ModelSpec, mode: str, tau: float, alpha: float | None) -> ModelSpec:
    """`base` with the fusion `mode`, `tau` and `alpha` (None: not an attention, no alpha)."""
    hparams = {key: value for key, value in base.hparams.items() if key != ALPHA}
    if alpha is not None:
        hparams[ALPHA] = alpha
    return base.model_copy(update={"content_mode": mode, "tau": tau, "hparams": hparams})


def describe(spec: ModelSpec) -> dict[str, Any]:
    """A fusion as `{mode, tau, alpha}`, tau and alpha None where the mode has none."""
    attention = spec.content_mode in (PLAIN, CALIBRATED, "attention_prior")
    return {
        "mode": spec.content_mode,
        "tau": spec.tau if attention else None,
        "alpha": float(spec.hparams.get(ALPHA, DEFAULT_ALPHA)) if attention else None,
    }


def from_description(cell: dict[str, Any], base: ModelSpec) -> ModelSpec:
    """The spec `describe` gave `cell`, on `base`'s backbone and hyper-parameters."""
    return fusion_spec(base, cell["mode"], cell["tau"] if cell["tau"] is not None else base.tau, cell["alpha"])


def label(cell: dict[str, Any]) -> str:
    """A short name of a described fusion, e.g. `attention_calibrated t=0.5 a=1`."""
    if cell["tau"] is None:
        return cell["mode"]
    return f"{cell['mode']} t={cell['tau']:g} a={cell['alpha']:g}"


def fusion_manifest(model: Recommender, spec: ModelSpec, metrics: dict[str, Any]) -> Fusion:
    """The bundle manifest's record of a trained model's fusion: mode, tau and alpha where
    attention uses them, a calibrated attention's cosine statistics (also baked into the item
    tower), and the grid when validation chose it (`metrics["fusion_choice"]`)."""
    fusion = model.encoder.fusion if isinstance(model, ContentRecommender) else None
    cells = metrics.get("fusion_choice", {}).get("grid")
    grid = None if cells is None else [
        FusionCandidate(mode=cell["mode"], tau=cell["tau"], alpha=cell["alpha"],
                        valid_recall_at_20=cell[f"valid_{VALID_METRIC}"])
        for cell in cells
    ]
    return Fusion(mode=spec.content_mode, **(fusion.settings() if fusion is not None else {}), grid=grid)
