"""The benchmark grid: backbones x content modes x seeds on one split, a popularity baseline,
a per-view ablation of the best multi-modal backbone, and a report (`bench.md`, `bench.json`,
`valid_recall.png`) that names the machine it ran on.

The split is fixed (its own seed); the bench seeds vary model initialisation and sampling.
The mode `validated` runs, per multi-modal backbone and seed, every fusion of `fusion_grid`
(`offline.train.fusion_grid`; each recorded with the label `grid <fusion>`) and records the one
validation chose under the label `validated`.
"""

import json
import os
import platform
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from tqdm.auto import tqdm

from offline.config import StrictModel
from offline.data.catalog import load_catalog
from offline.data.split import SplitConfig, SplitData, split_catalog
from offline.models import MODELS, ContentFeatures, ModelSpec
from offline.models.content_encoder import ID_ONLY, ContentMode
from offline.train.fusion_grid import VALIDATED, FusionGrid, describe, label
from offline.train.run import (
    Experiment,
    choose_fusion,
    device_name,
    load_content,
    popularity_metrics,
    run_experiment,
)
from offline.train.trainer import TrainConfig

DEFAULT_MODELS = ["freedom", "bm3", "vbpr", "lightgcn", "bpr"]
DEFAULT_MODES: list[ContentMode] = ["none", "image", "global", "mean", "concat", "attention"]
ABLATION_MODE = "attention"
# (section, metric, column title) of the report table
COLUMNS = [
    ("test", "recall@20", "Recall@20"),
    ("test", "ndcg@20", "NDCG@20"),
    ("test", "recall@50", "Recall@50"),
    ("cold.all", "recall@20", "cold R@20 (all)"),
    ("cold.cold_only", "recall@20", "cold R@20 (cold only)"),
    ("all_items", "recall@20", "all items R@20"),
]
PLOT_FILE = "valid_recall.png"


class BenchConfig(StrictModel):
    data: Path
    features: Path | None = None
    out: Path
    views: str | None = None
    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS))
    modes: list[ContentMode | Literal["validated"]] = Field(default_factory=lambda: list(DEFAULT_MODES))
    seeds: int = Field(default=3, ge=1)
    tau: float = Field(default=0.2, gt=0)
    fusion_grid: FusionGrid = Field(default_factory=FusionGrid, description="the fusions `validated` chooses among")
    split: SplitConfig = Field(default_factory=SplitConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    ablation: bool = True


def grid(models: list[str], modes: list[str], content: ContentFeatures | None, tau: float) -> list[ModelSpec]:
    """Every usable (backbone, mode): ID-only backbones with `none`, multi-modal ones with the
    other modes (`global` only when the features have a global view; `validated`, which trains a
    grid of its own, is left out: `Bench.run_validated`)."""
    specs = []
    for name in models:
        multimodal = ModelSpec(name=name, content_mode=ID_ONLY).model_class().multimodal
        for mode in modes:
            if multimodal == (mode == ID_ONLY) or mode == VALIDATED:
                continue
            if mode == "global" and (content is None or not content.has_global):
                continue
            specs.append(ModelSpec(name=name, content_mode=mode, tau=tau))
    if not specs and VALIDATED not in modes:
        raise ValueError(f"no usable (model, mode) pair in models {models} x modes {modes}")
    return specs


def machine() -> dict[str, Any]:
    """What the timings were measured on."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_record(experiment: Experiment, label: str) -> dict[str, Any]:
    fit = experiment.fit
    return {
        "model": experiment.spec.name,
        "content_mode": experiment.spec.content_mode,
        "label": label,
        "seed": experiment.seed,
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "seconds_per_epoch": fit.seconds / fit.epochs_run,
        "seconds": experiment.seconds,
        **experiment.metrics,
        "history": fit.history_dicts(),
    }


def _value(record: dict[str, Any], section: str, metric: str) -> float | None:
    node: Any = record
    for key in section.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return None if node is None else node[metric]


def _stats(values: list[float | None]) -> dict[str, float] | None:
    present = [value for value in values if value is not None]
    if not present:
        return None
    std = statistics.stdev(present) if len(present) > 1 else 0.0
    return {"mean": statistics.fmean(present), "std": std}


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds for each (model, mode, label), in first-seen order."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["model"], record["content_mode"], record["label"])].append(record)
    rows = []
    for (model, mode, label), runs in groups.items():
        row: dict[str, Any] = {"model": model, "content_mode": mode, "label": label, "seeds": len(runs)}
        for section, metric, _ in COLUMNS:
            row[f"{section}.{metric}"] = _stats([_value(run, section, metric) for run in runs])
        for key in ("epochs_run", "best_epoch", "seconds_per_epoch", "seconds"):
            row[key] = _stats([run[key] for run in runs])
        rows.append(row)
    return rows


def _cell(stats: dict[str, float] | None, digits: int = 4) -> str:
    if stats is None:
        return "–"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]], popularity: dict[str, dict[str, float]] | None) -> str:
    header = ["model", "content"] + [title for _, _, title in COLUMNS] + ["epochs", "s/epoch", "total s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["model"], row["label"]]
        cells += [_cell(row[f"{section}.{metric}"]) for section, metric, _ in COLUMNS]
        cells += [_cell(row["epochs_run"], 1), _cell(row["seconds_per_epoch"], 3), _cell(row["seconds"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    if popularity is not None:
        values = [_value(popularity, section, metric) for section, metric, _ in COLUMNS]
        cells = ["popularity", "–"] + ["–" if value is None else f"{value:.4f}" for value in values]
        cells += ["–"] * (len(header) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_validation(records: list[dict[str, Any]], path: Path) -> None:
    """Validation Recall@20 per epoch of the first seed of every grid variant, one panel per backbone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    first_seed = min(record["seed"] for record in records)
    chosen = [r for r in records if r["seed"] == first_seed and r["label"] == r["content_mode"]]
    models = list(dict.fromkeys(record["model"] for record in chosen))
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.6), squeeze=False, sharey=True)
    for axis, model in zip(axes[0], models):
        for record in (r for r in chosen if r["model"] == model):
            epochs = [log["epoch"] for log in record["history"]]
            axis.plot(epochs, [log["valid_recall_at_20"] for log in record["history"]], label=record["label"])
        axis.set_title(model)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("valid Recall@20")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class Bench:
    """Runs the grid and the ablation on one split, collecting one record per run."""

    def __init__(self, cfg: BenchConfig, split: SplitData, content: ContentFeatures | None):
        self.cfg = cfg
        self.split = split
        self.content = content
        self.records: list[dict[str, Any]] = []

    def _run(self, specs: list[tuple[ModelSpec, ContentFeatures | None, str]], title: str) -> None:
        jobs = [(spec, content, label, seed) for spec, content, label in specs for seed in range(self.cfg.seeds)]
        bar = tqdm(jobs, desc=title)
        for spec, content, label, seed in bar:
            bar.set_postfix_str(f"{spec.name}/{label}/seed{seed}")
            experiment = run_experiment(self.split, content, spec, self.cfg.train, seed)
            self.records.append(run_record(experiment, label))

    def run_grid(self) -> None:
        specs = grid(self.cfg.models, self.cfg.modes, self.content, self.cfg.tau)
        self._run([(spec, self.content, spec.content_mode) for spec in specs], "bench grid")
        if VALIDATED in self.cfg.modes:
            self.run_validated()

    def run_validated(self) -> None:
        """Per multi-modal backbone and seed: every fusion of the grid, and the one validation chose."""
        for name in (name for name in self.cfg.models if MODELS[name].multimodal):
            base = ModelSpec(name=name, tau=self.cfg.tau)
            for seed in tqdm(range(self.cfg.seeds), desc=f"validated fusion ({name})"):
                choice = choose_fusion(
                    self.split, self.content, base, self.cfg.train, seed, self.cfg.fusion_grid, progress=False,
                    on_experiment=lambda e: self.records.append(run_record(e, f"grid {label(describe(e.spec))}")),
                )
                record = run_record(choice.experiment, VALIDATED)
                self.records.append({**record, "content_mode": VALIDATED, "chosen": describe(choice.experiment.spec)})

    def best_multimodal(self) -> str | None:
        rows = [row for row in summarise(self.records) if MODELS[row["model"]].multimodal]
        if not rows:
            return None
        return max(rows, key=lambda row: row["test.recall@20"]["mean"])["model"]

    def run_ablation(self, model: str) -> None:
        """Attention fusion of `model` with each view left out in turn (and with all views,
        unless the grid ran it already)."""
        if self.content is None:
            raise ValueError("the view ablation needs content features")
        spec = ModelSpec(name=model, content_mode=ABLATION_MODE, tau=self.cfg.tau)
        jobs = [(spec, self.content.without_view(view), f"{ABLATION_MODE} -{view}") for view in self.content.views]
        if not any(r["model"] == model and r["label"] == ABLATION_MODE for r in self.records):
            jobs.insert(0, (spec, self.content, ABLATION_MODE))
        self._run(jobs, f"view ablation ({model})")


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark and write `bench.md`, `bench.json` and the validation plot into `cfg.out`."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    split = split_catalog(load_catalog(cfg.data, views=cfg.views), cfg.split)
    needs_content = any(MODELS[name].multimodal for name in cfg.models if name in MODELS)
    content = load_content(cfg.features, split) if needs_content else None
    bench = Bench(cfg, split, content)
    bench.run_grid()
    grid_records = list(bench.records)
    best = bench.best_multimodal()
    if cfg.ablation and best is not None and content is not None and len(content.views) > 1:
        bench.run_ablation(best)
    popularity = popularity_metrics(split, cfg.train.eval_batch_size)
    rows = summarise(grid_records)
    ablation_rows = [
        row for row in summarise(bench.records) if row["model"] == best and row["content_mode"] == ABLATION_MODE
    ]
    report = {
        "machine": {**machine(), "device": device_name(cfg.train)},
        "split": split.summary(),
        "settings": cfg.model_dump(mode="json"),
        "rows": rows,
        "popularity": popularity,
        "ablation_model": best,
        "ablation_rows": ablation_rows if best is not None and cfg.ablation else [],
        "runs": bench.records,
    }
    (out / "bench.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot_validation(grid_records, out / PLOT_FILE)
    (out / "bench.md").write_text(render_markdown(report), encoding="utf-8")
    return report


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    settings = report["settings"]
    lines = [
        "# CLIPER backbone benchmark",
        "",
        f"Machine: {m['cpu']}, {m['usable_cores']} usable cores of {m['cores']}, device {m['device']}, "
        f"torch {m['torch']} ({m['torch_threads']} threads), Python {m['python']}, {m['platform']}.",
        "",
        f"Data: `{settings['data']}`; split: {report['split']}.",
        f"Seeds: {settings['seeds']}; max epochs {settings['train']['epochs']}, patience "
        f"{settings['train']['patience']}, batch {settings['train']['batch_size']}; tau {settings['tau']}.",
        "Test metrics rank warm items with training positives masked (MMRec protocol); cold metrics rank "
        "each user's new (cold) items among all items or among cold items only; all items ranks each "
        "user's test and new items together among every item. Mean ± std over seeds; "
        "epochs = epochs run (early stopping on valid Recall@20).",
        "",
        markdown_table(report["rows"], report["popularity"]),
        "",
    ]
    new_users = report["popularity"]["new_users"]
    if new_users is not None:
        lines += [
            f"New users (no training interaction; every model serves them popularity): Recall@20 "
            f"{new_users['recall@20']:.4f}, NDCG@20 {new_users['ndcg@20']:.4f}.",
            "",
        ]
    chosen = [run for run in report["runs"] if run["label"] == VALIDATED]
    if chosen:
        picks = "; ".join(f"{run['model']} seed {run['seed']}: {label(run['chosen'])}" for run in chosen)
        lines += [f"Fusions validation chose (`validated`, best validation Recall@20 of the `grid` rows): {picks}.", ""]
    if report["ablation_rows"]:
        lines += [
            f"## Per-view ablation: {report['ablation_model']} with attention fusion, one view left out",
            "",
            markdown_table(report["ablation_rows"], None),
            "",
        ]
    lines += [f"![validation Recall@20 per epoch]({PLOT_FILE})", ""]
    return "\n".join(lines)
