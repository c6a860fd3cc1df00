"""One training run: catalog -> split -> features -> backbone -> metrics, written to `out/`.

Two jobs use it. *Evaluate* (`train_run` on an evaluation split, temporal or random): train to
early stopping on validation and measure. *Refit* (`refit_run`): train again on every
interaction for the epoch count evaluation chose, with the same settings; that is the model a
bundle serves.

`out/` gets `checkpoint.pt` (best weights + model spec), `metrics.json`, `history.json` (per
epoch: loss, valid recall@20, seconds), `config.yaml` (this run's settings) and `split/`
(`SplitData.save`). An evaluation's metrics hold `valid`, `test` (warm users, warm items),
`cold` (new items: `all` / `cold_only`), `all_items` (warm users' test and new items among
every item), `cold_map` with
the cold map's chosen ridge strength and scale, `view_prior` with the learned per-view bias of an
`attention_prior` fusion, `view_weights` (per view: the mean weight over the split's items and
the share below half the uniform weight; on a synthetic world also over the items whose field
lies and those whose field is truthful), and the popularity baseline (with `new_users`:
popularity is what users with no training interaction get). A run with content mode
`validated` (`offline.train.fusion_grid`) trains every fusion of its grid and keeps the best on
validation: its metrics are the chosen model's, with `fusion_choice` (the choice and every
cell's validation Recall@20), and its `config.yaml` names the chosen fusion. A refit's metrics
hold `refit: true`, the `evaluation` it was chosen by (or why there was none) and the
`fusion_choice` it took from it.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import Field

from offline.clip.alignment import planted_lies, weight_summary
from offline.config import ConfigError, read_yaml
from offline.data.catalog import load_catalog
from offline.data.split import SplitConfig, SplitData, split_catalog
from offline.models import MODELS, ContentFeatures, InteractionGraph, ModelSpec, Recommender
from offline.models.content import ContentRecommender
from offline.models.content_encoder import ID_ONLY, ContentMode
from offline.train.evaluate import VALID_METRIC, Evaluator, model_vectors, popularity_vectors
from offline.train.fusion_grid import ALPHA, VALIDATED, FusionGrid, describe, from_description
from offline.train.trainer import Checkpoint, FitResult, TrainConfig, train_model

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"
PATH_FIELDS = ("data", "features", "out")
REFIT_EPOCHS_UNEVALUATED = 50  # a refit's length when the data cannot support an evaluation


class RunConfig(TrainConfig):
    """A training run. Paths in a YAML file are relative to that file's folder."""

    data: Path = Field(description="catalog folder (items.csv, interactions.csv)")
    views: str | None = Field(default=None, description="views preset or YAML; default: the catalog's own")
    features: Path | None = Field(default=None, description="features folder; needed by multi-modal models")
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: str = "freedom"
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="hyper-parameters over the model's YAML")
    content_mode: ContentMode | Literal["validated"] | None = Field(
        default=None,
        description="default: attention, or none for ID-only models; `validated`: the best fusion of "
        "`fusion_grid` on validation",
    )
    tau: float = Field(default=0.2, gt=0)
    fusion_grid: FusionGrid = Field(default_factory=FusionGrid, description="the fusions `validated` chooses among")
    drop_views: list[str] = Field(default_factory=list, description="text views left out (ablation)")
    seed: int = 2024
    out: Path = Path("runs/train")

    def model_spec(self) -> ModelSpec:
        """The model to train; with `validated`, the base whose fusion the grid replaces."""
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {sorted(MODELS)}")
        mode = self.content_mode if self.content_mode not in (None, VALIDATED) else None
        mode = mode or ("attention" if MODELS[self.model].multimodal else ID_ONLY)
        return ModelSpec(name=self.model, content_mode=mode, tau=self.tau, hparams=self.model_overrides).check()

    @property
    def validates_fusion(self) -> bool:
        return self.content_mode == VALIDATED

    def with_fusion(self, spec: ModelSpec) -> "RunConfig":
        """These settings with `spec`'s fusion: its content mode, tau and alpha."""
        overrides = {key: value for key, value in self.model_overrides.items() if key != ALPHA}
        overrides.update({key: value for key, value in spec.hparams.items() if key == ALPHA})
        update = {"content_mode": spec.content_mode, "tau": spec.tau, "model_overrides": overrides}
        return self.model_copy(update=update)

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> "RunConfig":
        """Load `path`, resolving its relative paths against its folder; `overrides` (CLI
        values, relative to the working directory) win."""
        data = read_yaml(path)
        for key in PATH_FIELDS:
            if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
                data[key] = str((path.parent / data[key]).resolve())
        data.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return cls.model_validate(data)
        except ValueError as exc:
            raise ConfigError(f"invalid settings in {path}:\n{exc}") from exc


def load_content(
    folder: Path | None, split: SplitData, drop_views: list[str] | tuple[str, ...] = ()
) -> ContentFeatures:
    """The features of a split's items, minus the dropped views."""
    if folder is None:
        raise ConfigError("a multi-modal model needs `features` (a folder written by `python -m offline features`)")
    content = ContentFeatures.load(folder, split.item_ids)
    for view in drop_views:
        content = content.without_view(view)
    return content


@dataclass
class Experiment:
    """The outcome of training one backbone on one split with one seed."""

    spec: ModelSpec
    seed: int
    model: Recommender
    fit: FitResult
    metrics: dict[str, Any]
    seconds: float


def run_experiment(
    split: SplitData,
    content: ContentFeatures | None,
    spec: ModelSpec,
    config: TrainConfig,
    seed: int,
    checkpoint: Path | None = None,
    progress: bool = True,
) -> Experiment:
    """Train with early stopping, then evaluate the best weights on valid, test, cold items and
    all items; a split with nothing to evaluate (a refit) trains `config.epochs` epochs."""
    started = time.perf_counter()
    evaluator = Evaluator(split, batch_size=config.eval_batch_size) if split.evaluable else None
    saver = Checkpoint(checkpoint, spec) if checkpoint is not None else None
    graph = InteractionGraph.from_split(split)
    model, fit = train_model(spec, graph, content, evaluator, config, seed, saver, progress)
    vectors = model_vectors(model)
    metrics: dict[str, Any] = {}
    if evaluator is not None:
        metrics = {
            "valid": fit.best_valid,
            "test": evaluator.evaluate_test(vectors),
            "cold": evaluator.evaluate_cold(vectors) if model.multimodal else None,
            "all_items": evaluator.evaluate_all_items(vectors),
        }
    if isinstance(model, ContentRecommender):  # what the cross-validation chose for the cold map
        metrics["cold_map"] = {"ridge": model.cold_ridge, "scale": model.cold_scale.item()}
        prior = model.encoder.fusion.prior if model.encoder.fusion is not None else None
        if prior is not None:  # where training moved each view's logit (`attention_prior`)
            metrics["view_prior"] = dict(zip(content.views, prior.tolist(), strict=True))
    return Experiment(spec, seed, model, fit, metrics, time.perf_counter() - started)


@dataclass
class FusionChoice:
    """The fusion validation chose: its trained experiment, and every cell of the grid."""

    experiment: Experiment
    grid: list[dict[str, Any]]

    def record(self) -> dict[str, Any]:
        """`metrics.json`'s `fusion_choice`."""
        return {"metric": VALID_METRIC, "chosen": describe(self.experiment.spec), "grid": self.grid}


def choose_fusion(
    split: SplitData,
    content: ContentFeatures,
    base: ModelSpec,
    config: TrainConfig,
    seed: int,
    grid: FusionGrid,
    progress: bool = True,
    on_experiment: Callable[[Experiment], None] | None = None,
) -> FusionChoice:
    """Train `base` with every fusion of `grid` (each to early stopping on validation) and keep
    the one with the best validation Recall@20 (the first on a tie: the mean). `on_experiment`
    sees every trained cell (a benchmark records them); only the best model is kept."""
    if not split.evaluable:
        raise ConfigError("choosing the fusion on validation needs a split with a validation part")
    best: Experiment | None = None
    cells = []
    for spec in grid.candidates(base):
        experiment = run_experiment(split, content, spec, config, seed, progress=progress)
        if on_experiment is not None:
            on_experiment(experiment)
        score = experiment.fit.best_valid[VALID_METRIC]
        cells.append({**describe(spec), f"valid_{VALID_METRIC}": score, "best_epoch": experiment.fit.best_epoch})
        if best is None or score > best.fit.best_valid[VALID_METRIC]:
            best = experiment
    chosen = describe(best.spec)
    for cell in cells:
        cell["chosen"] = {key: cell[key] for key in chosen} == chosen
    return FusionChoice(best, cells)


def view_weight_diagnostics(model: Recommender, content: ContentFeatures, data: Path, item_ids: list[str]) -> dict:
    """`weight_summary` of the model's view weights over every item of the split, with the
    planted lies of a synthetic world; empty for an ID-only model."""
    if not isinstance(model, ContentRecommender):
        return {}
    with torch.no_grad():
        weights = model.content_view_weights(model.image_features, model.text_view_features).cpu().numpy()
    return weight_summary(weights, content.views, planted_lies(data, item_ids, content.views))


def popularity_metrics(split: SplitData, batch_size: int = 4096) -> dict[str, dict[str, float]]:
    """Ranking by training popularity: valid and test (warm items), all items, and new users
    (for whom it is what the service serves; None without new users)."""
    evaluator = Evaluator(split, batch_size=batch_size)
    vectors = popularity_vectors(split.n_users, split.n_items, split.train)
    return {
        "valid": evaluator.evaluate_valid(vectors),
        "test": evaluator.evaluate_test(vectors),
        "all_items": evaluator.evaluate_all_items(vectors),
        "new_users": evaluator.evaluate_new_users(),
    }


def device_name(config: TrainConfig) -> str:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name()
    return "cpu"


def train_run(cfg: RunConfig, progress: bool = True, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `cfg` end to end and write its outputs into `cfg.out`; returns the metrics (with
    `extra` merged in). Raises `SplitTooSparse` when the split cannot be evaluated."""
    spec = cfg.model_spec()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    split = split_catalog(load_catalog(cfg.data, views=cfg.views), cfg.split)
    split.save(out / "split")
    content = load_content(cfg.features, split, cfg.drop_views) if spec.model_class().multimodal else None
    choice: dict[str, Any] = {}
    if cfg.validates_fusion and spec.model_class().multimodal:
        chosen = choose_fusion(split, content, spec, cfg, cfg.seed, cfg.fusion_grid, progress)
        experiment = chosen.experiment
        fit = experiment.fit
        Checkpoint(out / CHECKPOINT_FILE, experiment.spec).save(experiment.model, fit.best_epoch, fit.best_valid)
        choice = {"fusion_choice": chosen.record()}
    else:
        experiment = run_experiment(split, content, spec, cfg, cfg.seed, out / CHECKPOINT_FILE, progress)
    spec = experiment.spec
    metrics = {
        "model": spec.name,
        "content_mode": spec.content_mode,
        "tau": spec.tau,
        "alpha": describe(spec)["alpha"],
        "views": list(content.views) if content is not None else [],
        "seed": cfg.seed,
        "device": device_name(cfg),
        "split": split.summary(),
        "best_epoch": experiment.fit.best_epoch,
        "epochs_run": experiment.fit.epochs_run,
        "train_seconds": round(experiment.fit.seconds, 2),
        "seconds_per_epoch": round(experiment.fit.seconds / experiment.fit.epochs_run, 3),
        **experiment.metrics,
        "view_weights": view_weight_diagnostics(experiment.model, content, cfg.data, split.item_ids),
        **choice,
        **({"popularity": popularity_metrics(split, cfg.eval_batch_size)} if split.evaluable else {}),
        **(extra or {}),
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    (out / "history.json").write_text(json.dumps(experiment.fit.history_dicts(), indent=2), encoding="utf-8")
    absolute = {key: Path(getattr(cfg, key)).resolve() for key in PATH_FIELDS if getattr(cfg, key) is not None}
    resolved = cfg.with_fusion(spec).model_copy(update=absolute).model_dump(mode="json")
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    return metrics


def refit_run(
    cfg: RunConfig, out: Path, evaluation: dict[str, Any] | str, progress: bool = True
) -> dict[str, Any]:
    """Train `cfg`'s model again on every interaction and every catalog item, into `out`.

    `evaluation` is the evaluation run's metrics (its best epoch sets the length), or the
    reason there is none (then `REFIT_EPOCHS_UNEVALUATED` epochs). Its metrics are recorded
    under `evaluation`, so a bundle exported from the refit carries them, and so is the fusion
    the evaluation chose on validation (`fusion_choice`). With content mode `validated` the
    refit takes that fusion (the paper's attention when there was no evaluation); the
    evaluation run's `config.yaml` already names it.
    """
    evaluated = isinstance(evaluation, dict)
    epochs = evaluation["best_epoch"] if evaluated else REFIT_EPOCHS_UNEVALUATED
    split = cfg.split.model_copy(update={"method": "none", "k_core": None, "cold_item_ratio": None})
    refit = cfg.model_copy(update={"split": split, "epochs": epochs, "out": Path(out)})
    record = {"refit": True, "evaluation": evaluation if evaluated else {"skipped": evaluation}}
    choice = evaluation.get("fusion_choice") if evaluated else None
    if choice is not None:
        record["fusion_choice"] = choice
    if cfg.validates_fusion:
        if choice is None:
            refit = refit.model_copy(update={"content_mode": None})
            record["fusion_choice"] = {"skipped": "no evaluation chose a fusion: the paper's attention"}
        else:
            refit = refit.with_fusion(from_description(choice["chosen"], cfg.model_spec()))
    return train_run(refit, progress, record)
