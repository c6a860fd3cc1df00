"""BPR training with negative sampling, Adam, and early stopping on validation Recall@20."""

import copy
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from tqdm.auto import tqdm

from offline.config import StrictModel
from offline.models import ContentFeatures, InteractionGraph, ModelSpec, Recommender, build_model
from offline.train.evaluate import VALID_METRIC, Evaluator, warm_vectors

CHECKPOINT_FORMAT = 2  # 2: saved again after training with the fitted cold map (and its flag)


class TrainConfig(StrictModel):
    """Training loop settings (the learning rate and weight decay are model hyper-parameters)."""

    epochs: int = Field(default=200, ge=1, description="maximum number of epochs")
    patience: int = Field(default=10, ge=1, description="epochs without a better valid recall@20 before stopping")
    batch_size: int = Field(default=2048, ge=1)
    eval_batch_size: int = Field(default=4096, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(
        default=1,
        ge=1,
        description="torch CPU threads; these models are small, so one thread is fastest unless cores are idle",
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(choice: str = "auto", threads: int = 1) -> torch.device:
    """CUDA when available (or asked), else CPU with `threads` intra-op threads.

    Per-op work is tiny here (64-d embeddings, a few thousand nodes), so extra threads add
    synchronisation, and on a busy machine their spin-waiting slowed an epoch 10x in our runs.
    """
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    torch.set_num_threads(threads)
    return torch.device("cpu")


class NegativeSampler:
    """Uniform negatives over the warm items, resampled until none is a training positive."""

    def __init__(self, graph: InteractionGraph, rng: np.random.Generator):
        self.rng = rng
        self.n_items = graph.n_items
        self.warm = graph.warm_items
        self.positive_keys = np.unique(graph.edges[:, 0] * graph.n_items + graph.edges[:, 1])
        per_user = np.bincount(graph.edges[:, 0], minlength=graph.n_users)
        if per_user.max() >= len(self.warm):
            raise ValueError("a user has interacted with every warm item: no negative can be sampled")

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        found = np.searchsorted(self.positive_keys, keys)
        found = np.minimum(found, len(self.positive_keys) - 1)
        return self.positive_keys[found] == keys

    def sample(self, users: np.ndarray) -> np.ndarray:
        negatives = self.warm[self.rng.integers(0, len(self.warm), len(users))]
        redo = np.flatnonzero(self._is_positive(users, negatives))
        while len(redo):
            negatives[redo] = self.warm[self.rng.integers(0, len(self.warm), len(redo))]
            redo = redo[self._is_positive(users[redo], negatives[redo])]
        return negatives


@dataclass
class EpochLog:
    epoch: int
    loss: float
    valid_recall_at_20: float | None  # None in a refit, which has no validation
    seconds: float


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    history: list[EpochLog] = field(default_factory=list)

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def seconds(self) -> float:
        return sum(log.seconds for log in self.history)

    def history_dicts(self) -> list[dict[str, Any]]:
        return [asdict(log) for log in self.history]


@dataclass(frozen=True)
class Checkpoint:
    """Where to save the best model: its weights and the spec (hyper-parameters resolved) that
    rebuilds it."""

    path: Path
    spec: ModelSpec

    def save(self, model: Recommender, epoch: int, valid: dict[str, float]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        spec = self.spec.model_copy(update={"hparams": model.hparams.model_dump()})
        state = {
            "format": CHECKPOINT_FORMAT,
            "spec": spec.model_dump(mode="json"),
            "epoch": epoch,
            "valid": valid,
            "state_dict": model.state_dict(),
        }
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)


def load_checkpoint(
    path: Path, graph: InteractionGraph, content: ContentFeatures | None, device: torch.device | str = "cpu"
) -> tuple[Recommender, dict[str, Any]]:
    """Rebuild the model a checkpoint was saved from (same split and features) with its weights."""
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}: checkpoint format {state.get('format')!r}, this version reads {CHECKPOINT_FORMAT}; "
            "train the run again"
        )
    spec = ModelSpec.model_validate(state["spec"])
    model = build_model(spec, graph, content).to(device)
    model.load_state_dict(state["state_dict"])
    model.eval()
    return model, {"spec": spec, "epoch": state["epoch"], "valid": state["valid"]}


def _epoch_loss(
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    pairs: np.ndarray,
    sampler: NegativeSampler,
    batch_size: int,
    device: torch.device,
) -> float:
    model.train()
    model.pre_epoch()
    order = sampler.rng.permutation(len(pairs))
    users, positives = pairs[order, 0], pairs[order, 1]
    negatives = sampler.sample(users)
    batch = torch.from_numpy(np.stack([users, positives, negatives])).to(device)
    total = 0.0
    for start in range(0, len(order), batch_size):
        u, p, n = batch[:, start : start + batch_size]
        loss = model.calculate_loss(u, p, n)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(u)
    return total / len(order)


def fit(
    model: Recommender,
    graph: InteractionGraph,
    evaluator: Evaluator | None,
    config: TrainConfig,
    seed: int,
    checkpoint: Checkpoint | None = None,
    progress: bool = True,
    description: str = "train",
) -> FitResult:
    """Train until validation Recall@20 stops improving for `patience` epochs; the model ends
    with its best weights in eval mode (cold map fitted), written to `checkpoint` at every
    improvement and, at the end, with the fitted map, so export serves what evaluation measured.

    Without an `evaluator` (a refit on every interaction) it trains exactly `config.epochs`
    epochs, the count validation chose, and keeps the last weights.
    """
    device = next(model.parameters()).device
    hp = model.hparams
    optimizer = torch.optim.Adam(model.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
    sampler = NegativeSampler(graph, np.random.default_rng(seed))
    result = FitResult(best_epoch=0, best_valid={})
    best_state: dict[str, torch.Tensor] = {}
    best_score = -1.0
    bar = tqdm(range(1, config.epochs + 1), desc=description, disable=not progress, leave=False)
    for epoch in bar:
        started = time.perf_counter()
        loss = _epoch_loss(model, optimizer, graph.edges, sampler, config.batch_size, device)
        if not np.isfinite(loss):
            raise FloatingPointError(f"{description}: the loss became {loss} at epoch {epoch}; lower the learning rate")
        if evaluator is None:
            result.history.append(EpochLog(epoch, loss, None, time.perf_counter() - started))
            bar.set_postfix(loss=f"{loss:.4f}")
            continue
        valid = evaluator.evaluate_valid(warm_vectors(model))
        score = valid[VALID_METRIC]
        result.history.append(EpochLog(epoch, loss, score, time.perf_counter() - started))
        if score > best_score:
            best_score, result.best_epoch, result.best_valid = score, epoch, valid
            best_state = copy.deepcopy(model.state_dict())
            if checkpoint is not None:
                checkpoint.save(model, epoch, valid)
        bar.set_postfix(loss=f"{loss:.4f}", r20=f"{score:.4f}", best=f"{best_score:.4f}@{result.best_epoch}")
        if epoch - result.best_epoch >= config.patience:
            break
    bar.close()
    if evaluator is None:
        result.best_epoch = config.epochs
    else:
        model.load_state_dict(best_state)
    model.eval()
    if checkpoint is not None:
        checkpoint.save(model, result.best_epoch, result.best_valid)
    return result


def train_model(
    spec: ModelSpec,
    graph: InteractionGraph,
    content: ContentFeatures | None,
    evaluator: Evaluator | None,
    config: TrainConfig,
    seed: int,
    checkpoint: Checkpoint | None = None,
    progress: bool = True,
) -> tuple[Recommender, FitResult]:
    """Seed, build the backbone on the chosen device, and `fit` it."""
    seed_everything(seed)
    device = select_device(config.device, config.threads)
    model = build_model(spec, graph, content).to(device)
    description = f"{spec.name}/{spec.content_mode}/seed{seed}"
    return model, fit(model, graph, evaluator, config, seed, checkpoint, progress, description)
