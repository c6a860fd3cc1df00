"""`python -m offline foldin`: the fold-in protocol on a temporal evaluation run and its bundle.

The bundle exported from the evaluation run (trained on the interactions before the first
cut-off) gives the stale user vectors, the item vectors, the seen items and popularity, exactly
as the service loads them. The test period is every catalog interaction from the split's
`test_from` on, after the split's own filters. `offline.train.foldin.fold_in_protocol` then
compares the stale vectors, the service's fold-in rules and popularity with a **retrain**: the
run's model trained again, with its settings and its evaluation's epoch count, on the training
period plus every user's folded half. The validation period is in neither: the stale vectors
never saw it, so the retrain does not either.
"""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cliper.bundle import LoadedBundle, read_bundle
from offline.config import ConfigError
from offline.data.catalog import Catalog
from offline.data.split import SplitConfig, filtered_interactions, split_catalog
from offline.export.bundle import TrainedRun, load_run
from offline.train.evaluate import model_vectors
from offline.train.foldin import fold_in_protocol, split_test_period
from offline.train.run import load_content, run_experiment

RETRAIN = "retrain"


def _check_pair(run: TrainedRun, bundle: LoadedBundle) -> None:
    if run.split.method != "temporal":
        raise ConfigError(f"{run.root} used a {run.split.method} split; the fold-in protocol needs a temporal one")
    trained_on = bundle.manifest.training.data if bundle.manifest.training is not None else None
    if trained_on != "evaluation_split" or bundle.user_ids != run.split.user_ids or bundle.item_ids != run.split.item_ids:
        raise ConfigError(f"{bundle.root} was not exported from {run.root} (its users or items differ)")


def later_interactions(run: TrainedRun, catalog: Catalog, bundle: LoadedBundle) -> tuple[np.ndarray, list[str]]:
    """`[user row, item row, timestamp]` of the test period, and the ids of users the bundle
    does not know (rows `n_users + j`)."""
    frame, _ = filtered_interactions(catalog, run.config.split.resolve(catalog))
    frame = frame[frame["timestamp"] >= run.split.stats["test_from"]]
    known = pd.Index(bundle.user_ids)
    unknown = pd.unique(frame["user_id"][known.get_indexer(frame["user_id"]) < 0]).tolist()
    users = pd.Index(bundle.user_ids + unknown).get_indexer(frame["user_id"])
    items = pd.Index(bundle.item_ids).get_indexer(frame["item_id"])
    return np.column_stack([users, items, frame["timestamp"].to_numpy()]).astype(np.int64), unknown


def retrain_history(
    run: TrainedRun, catalog: Catalog, bundle: LoadedBundle, test: np.ndarray, unknown: list[str]
) -> pd.DataFrame:
    """What the retrain learns from: the training period's interactions plus every user's folded
    half of the test period (`user_id`, `item_id`)."""
    cases = split_test_period(test, bundle.seen)
    user_ids = bundle.user_ids + unknown
    folded = [
        (user_ids[user], bundle.item_ids[item])
        for user, items in zip(cases.users, cases.folded, strict=True)
        for item in items
    ]
    frame, _ = filtered_interactions(catalog, run.config.split.resolve(catalog))
    training = frame[frame["timestamp"] < run.split.stats["valid_from"]][["user_id", "item_id"]]
    return pd.concat([training, pd.DataFrame(folded, columns=["user_id", "item_id"])], ignore_index=True)


def retrain_vectors(
    run: TrainedRun, catalog: Catalog, history: pd.DataFrame, user_ids: list[str], item_ids: list[str], progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """User vectors (rows `user_ids`; zeros for a user not in `history`) and item vectors (rows
    `item_ids`) of the run's model trained on `history` for the evaluation's epoch count."""
    split = split_catalog(dataclasses.replace(catalog, interactions=history), SplitConfig(method="none"))
    config = run.config.model_copy(update={"epochs": run.metrics["best_epoch"]})
    content = load_content(run.config.features, split)
    experiment = run_experiment(split, content, run.spec, config, run.config.seed, progress=progress)
    users, items = (vectors.float().numpy() for vectors in model_vectors(experiment.model))
    rows = pd.Index(split.user_ids).get_indexer(user_ids)
    aligned = np.where((rows >= 0)[:, None], users[rows], 0.0).astype(np.float32)
    return aligned, items[pd.Index(split.item_ids).get_indexer(item_ids)]


def measure_fold_in(run_dir: Path, bundle_dir: Path, progress: bool = True) -> dict[str, Any]:
    """The protocol's report (see `fold_in_protocol`) for the run at `run_dir` and its bundle."""
    run, bundle = load_run(run_dir), read_bundle(bundle_dir)
    _check_pair(run, bundle)
    catalog = run.load_catalog()
    test, unknown = later_interactions(run, catalog, bundle)
    history = retrain_history(run, catalog, bundle, test, unknown)
    retrain = retrain_vectors(run, catalog, history, bundle.user_ids + unknown, bundle.item_ids, progress)
    return fold_in_protocol(
        bundle.user_vectors, bundle.item_vectors, bundle.seen, test, bundle.popularity, extra={RETRAIN: retrain}
    )


def markdown(report: dict[str, Any], k: int = 20) -> str:
    """Recall@k and NDCG@k per method, for warm, new and all users."""
    groups = [group for group in ("warm", "new", "all") if report[group]["users"]]
    methods = [name for name in report[groups[0]] if name != "users"] if groups else []
    header = ["method"] + [f"{group} ({report[group]['users']} users) R@{k} / NDCG@{k}" for group in groups]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells = [f"{report[g][method][f'recall@{k}']:.4f} / {report[g][method][f'ndcg@{k}']:.4f}" for g in groups]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

