"""`offline pipeline`: train-clip -> features -> evaluate -> refit -> export -> verify.

    OUT/clip/      the CLIP trained on the caption corpus (skipped with real pretrained weights)
    OUT/features/  CLIP features of every catalog item
    OUT/train/     the evaluation run: trained to early stopping on a split, and measured; the
                   view fusion is chosen there on validation (`offline.train.fusion_grid`: the
                   mean of the views and CLIPER attentions over tau, alpha and calibration)
    OUT/refit/     the served model: the same settings trained again on every interaction for
                   the epoch count evaluation chose; every catalog item and user is in it
    OUT/bundle/    the verified model bundle, exported from the refit
    OUT/pipeline.json  per stage: the key it last finished with, its run id and its time

The split is temporal when the interactions have timestamps, else MMRec's random protocol
(`SplitConfig`). When the data cannot support an evaluation (too few interactions, nobody who
comes back after the cut-off), the pipeline says so and still refits and exports.

A stage runs again only when its key changes or its output is gone. The key hashes its
settings, its external inputs (files' names, sizes and modification times) and the run ids of
the stages before it (a stage that runs again gets a new run id, so everything after it runs
again too). The keys live in one state file rather than in the stage folders because the
bundle folder is swapped in whole and checksummed. Profiles set the training lengths: `demo`
(the default: a short CLIP training, sized for the synthetic shop on a laptop CPU, and the
recommender trained to early stopping, capped at 300 epochs, once per fusion of the default
grid, 13 runs) and `fast` (a smoke run for tests, two fusions).
"""

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from cliper.bundle import BundleError, read_manifest
from cliper.views import ViewsConfig
from offline.clip.features import FeaturesConfig, run_features
from offline.clip.model import ClipSpec, load_clip, read_clip_spec, resolve_device
from offline.clip.train import TrainClipConfig, train_clip
from offline.config import StrictModel
from offline.data.catalog import load_catalog, resolve_views
from offline.data.split import SplitConfig, SplitTooSparse
from offline.export.bundle import ExportConfig, export_bundle
from offline.export.verify import report, verify_bundle
from offline.train.fusion_grid import VALIDATED, FusionGrid, label
from offline.train.run import CHECKPOINT_FILE, METRICS_FILE, REFIT_EPOCHS_UNEVALUATED, RunConfig, refit_run, train_run

STATE_FILE = "pipeline.json"
CORPUS_DIR = "corpus"


class Profile(StrictModel):
    """Training lengths of a pipeline run."""

    clip_epochs: int = Field(ge=0)
    clip_batch_size: int = Field(ge=2)  # small batches: more steps in few epochs
    train_epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    fusion_grid: FusionGrid = Field(default_factory=FusionGrid)  # the fusions validation chooses among


PROFILES = {
    "demo": Profile(clip_epochs=3, clip_batch_size=32, train_epochs=300, patience=10),
    "fast": Profile(clip_epochs=1, clip_batch_size=32, train_epochs=3, patience=1,
                    fusion_grid=FusionGrid(taus=[0.5], alphas=[0.0, 1.0], calibration=[True])),
}


class PipelineConfig(StrictModel):
    """Settings of `offline pipeline`; every other setting is the stages' default."""

    data: Path
    out: Path
    corpus: Path | None = None  # default: DATA/corpus
    corpus_columns: dict[str, str] = {}  # view column -> corpus column, e.g. {genres: genre}
    views: str | None = None  # preset or YAML; default: the catalog's own
    clip_model: str = "cliper-minilm"
    clip_pretrained: str | None = None  # open_clip tag or weights file: skips train-clip
    finetune: bool = False  # train-clip from the pretrained weights anyway
    backbone: str = "freedom"
    split: SplitConfig = SplitConfig()
    profile: Literal["demo", "fast"] = "demo"
    index_factory: str = "Flat"
    fp16: bool = True
    thumbnails: bool = True


class PipelineError(RuntimeError):
    """A pipeline that could not leave a verified bundle; the message says which stage and why."""


@dataclass
class StageResult:
    name: str
    reused: bool
    seconds: float
    detail: str


class PipelineState:
    """`OUT/pipeline.json`: per stage, the key it last finished with and what it recorded."""

    def __init__(self, path: Path):
        self.path = path
        self.stages: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def finished(self, stage: str, key: str) -> dict[str, Any] | None:
        record = self.stages.get(stage)
        return record if record is not None and record.get("key") == key else None

    def record(self, stage: str, key: str, seconds: float, **extra: Any) -> None:
        self.stages[stage] = {"key": key, "run_id": uuid.uuid4().hex, "seconds": round(seconds, 2), **extra}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stages, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


def fingerprint(*parts: Any) -> str:
    """sha256 of JSON-serialisable parts (paths and other objects as their str)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def folder_fingerprint(folder: Path, skip: Path | None = None) -> str:
    """sha256 of every file's relative path, size and modification time under `folder`."""
    skip = skip.resolve() if skip is not None else None
    entries = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and (skip is None or not path.resolve().is_relative_to(skip)):
            stat = path.stat()
            entries.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    return fingerprint(entries)


def _pretrained_part(pretrained: str | None) -> Any:
    """A pretrained tag as itself; a weights file as its path, size and modification time."""
    if pretrained is not None and Path(pretrained).is_file():
        stat = Path(pretrained).stat()
        return [str(Path(pretrained).resolve()), stat.st_size, stat.st_mtime_ns]
    return pretrained


class Pipeline:
    """Runs the stages in order; each returns its run id for the keys of the stages after it."""

    def __init__(self, cfg: PipelineConfig, echo: Callable[[str], None]):
        self.cfg = cfg
        self.out = Path(cfg.out).resolve()
        self.data = Path(cfg.data).resolve()
        self.profile = PROFILES[cfg.profile]
        self.echo = echo
        self.out.mkdir(parents=True, exist_ok=True)
        self.state = PipelineState(self.out / STATE_FILE)
        self.results: list[StageResult] = []
        self.views: ViewsConfig = resolve_views(self.data, cfg.views)

    def run(self) -> list[StageResult]:
        clip_spec, clip_run = self.train_clip()
        features_run = self.features(clip_spec, clip_run)
        evaluate_run_id = self.evaluate(features_run)
        refit_run_id = self.refit(evaluate_run_id)
        version = self.export(refit_run_id, clip_spec)
        self.verify(version)
        return self.results

    def _stage(
        self, name: str, key: str, done: Callable[[dict[str, Any]], bool], work: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """Reuse the stage when its key and output match, else run `work` and record it."""
        record = self.state.finished(name, key)
        if record is not None and done(record):
            self.results.append(StageResult(name, True, 0.0, record.get("detail", "")))
            self.echo(f"[{name}] reused (inputs unchanged)")
            return record
        self.echo(f"[{name}] running")
        started = time.perf_counter()
        extra = work()
        seconds = time.perf_counter() - started
        self.state.record(name, key, seconds, **extra)
        self.results.append(StageResult(name, False, seconds, extra.get("detail", "")))
        self.echo(f"[{name}] done in {seconds:.1f} s {extra.get('detail', '')}")
        return self.state.stages[name]

    def train_clip(self) -> tuple[ClipSpec, str]:
        cfg = self.cfg
        base = ClipSpec(model=cfg.clip_model, pretrained=cfg.clip_pretrained)
        if cfg.clip_pretrained is not None and not cfg.finetune:
            self.results.append(StageResult("train-clip", True, 0.0, "skipped: pretrained weights given"))
            self.echo("[train-clip] skipped: pretrained weights given (--finetune trains them further)")
            return base, fingerprint("pretrained", cfg.clip_model, _pretrained_part(cfg.clip_pretrained))
        corpus = Path(cfg.corpus).resolve() if cfg.corpus is not None else self.data / CORPUS_DIR
        if not (corpus / "captions.csv").is_file() and not (corpus / "items.csv").is_file():
            raise PipelineError(
                f"[train-clip] no caption corpus at {corpus}: pass --corpus DIR (a captions.csv or "
                "catalog folder), or real CLIP weights with --clip-pretrained TAG|FILE"
            )
        clip_cfg = TrainClipConfig(
            clip=base,
            epochs=self.profile.clip_epochs,
            batch_size=self.profile.clip_batch_size,
            columns=cfg.corpus_columns,
        )
        key = fingerprint("train-clip", folder_fingerprint(corpus, self.out), self.views.model_dump(mode="json"),
                          clip_cfg.model_dump(mode="json"), _pretrained_part(cfg.clip_pretrained))

        def work() -> dict[str, Any]:
            metrics = train_clip(corpus, self.out, clip_cfg, self.views)
            return {"detail": f"({metrics['train_images']} images, {metrics['epochs']} epochs)"}

        record = self._stage("train-clip", key, lambda _: (self.out / "clip" / "clip.json").is_file(), work)
        return read_clip_spec(self.out / "clip"), record["run_id"]

    def features(self, clip_spec: ClipSpec, clip_run: str) -> str:
        features_cfg = FeaturesConfig(clip=clip_spec)
        key = fingerprint("features", folder_fingerprint(self.data, self.out), self.views.model_dump(mode="json"),
                          clip_run, features_cfg.model_dump(mode="json"))

        def work() -> dict[str, Any]:
            catalog = load_catalog(self.data, self.views)
            handle = load_clip(clip_spec, resolve_device(features_cfg.device))
            features, _, _ = run_features(catalog, handle, self.out, features_cfg)
            return {"detail": f"({len(features.item_ids)} items x {len(features.meta['views'])} views)"}

        return self._stage("features", key, lambda _: (self.out / "features" / "items.json").is_file(), work)["run_id"]

    def run_config(self) -> RunConfig:
        """The evaluation run's settings (the refit takes the same ones)."""
        return RunConfig(
            data=self.data,
            views=self.cfg.views,
            features=self.out / "features",
            split=self.cfg.split,
            model=self.cfg.backbone,
            content_mode=VALIDATED,
            fusion_grid=self.profile.fusion_grid,
            epochs=self.profile.train_epochs,
            patience=self.profile.patience,
            out=self.out / "train",
        )

    def evaluate(self, features_run: str) -> str:
        run_cfg = self.run_config()
        key = fingerprint("evaluate", features_run, run_cfg.model_dump(mode="json"))

        def work() -> dict[str, Any]:
            try:
                metrics = train_run(run_cfg)
            except SplitTooSparse as exc:
                self.echo(
                    f"[evaluate] not possible on this data: {exc}. The bundle is still built, from a refit "
                    f"on every interaction for {REFIT_EPOCHS_UNEVALUATED} epochs, but nothing measured it."
                )
                return {"skipped": str(exc), "detail": "(skipped: the data cannot support an evaluation)"}
            recall, epoch = metrics["test"]["recall@20"], metrics["best_epoch"]
            fusion = f"fusion {label(metrics['fusion_choice']['chosen'])}, " if "fusion_choice" in metrics else ""
            return {"detail": f"({fusion}warm test recall@20 {recall:.4f}, best epoch {epoch} of "
                              f"{metrics['epochs_run']})"}

        folder = self.out / "train"
        outputs = (folder / CHECKPOINT_FILE, folder / METRICS_FILE, folder / "config.yaml")
        done = lambda record: "skipped" in record or all(path.is_file() for path in outputs)  # noqa: E731
        return self._stage("evaluate", key, done, work)["run_id"]

    def refit(self, evaluate_run_id: str) -> str:
        folder = self.out / "refit"
        key = fingerprint("refit", evaluate_run_id)

        def work() -> dict[str, Any]:
            record = self.state.stages["evaluate"]
            evaluation = record["skipped"] if "skipped" in record else _read_metrics(self.out / "train")
            metrics = refit_run(self.run_config(), folder, evaluation)
            return {"detail": f"({metrics['split']}; {metrics['epochs_run']} epochs)"}

        outputs = (folder / CHECKPOINT_FILE, folder / METRICS_FILE, folder / "config.yaml")
        return self._stage("refit", key, lambda _: all(path.is_file() for path in outputs), work)["run_id"]

    def export(self, refit_run_id: str, clip_spec: ClipSpec) -> str:
        export_cfg = ExportConfig(index_factory=self.cfg.index_factory, fp16=self.cfg.fp16,
                                  thumbnails=self.cfg.thumbnails)
        key = fingerprint("export", refit_run_id, export_cfg.model_dump(mode="json"))
        bundle = self.out / "bundle"

        def work() -> dict[str, Any]:
            manifest = export_bundle(self.out / "refit", bundle, export_cfg, clip_spec)
            return {"bundle_version": manifest.bundle_version, "detail": f"(version {manifest.bundle_version})"}

        record = self._stage("export", key, lambda done: _bundle_version(bundle) == done.get("bundle_version"), work)
        return record["bundle_version"]

    def verify(self, bundle_version: str) -> None:
        bundle = self.out / "bundle"

        def work() -> dict[str, Any]:
            checks = verify_bundle(bundle, self.out / "refit")
            self.echo(report(checks))
            failed = [check.name for check in checks if not check.passed]
            if failed:
                raise PipelineError(f"[verify] the bundle at {bundle} failed the checks {failed} (table above)")
            return {"detail": f"({len(checks)} checks passed)"}

        key = fingerprint("verify", bundle_version)
        self._stage("verify", key, lambda _: _bundle_version(bundle) == bundle_version, work)


def _read_metrics(run: Path) -> dict[str, Any]:
    return json.loads((run / METRICS_FILE).read_text(encoding="utf-8"))


def _bundle_version(bundle: Path) -> str | None:
    try:
        return read_manifest(bundle).bundle_version
    except BundleError:
        return None


def run_pipeline(cfg: PipelineConfig, echo: Callable[[str], None] = print) -> list[StageResult]:
    """Run every stage that needs it; raises `PipelineError` (or a stage's `ConfigError`)."""
    return Pipeline(cfg, echo).run()
