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
from offline.models.content import ContentRecommender
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
    if isinstance(model, ContentRecommender) and not model.cold_map_fitted:
        raise ValueError(
            f"{path}: its cold-start map was never fitted (a checkpoint written during training, before "
            "it finished); train the run again"
        )
    return model, {"spec": spec, "epoch": state["epoch"], "valid": state["valid"]}


def adam(model: Recommender) -> torch.optim.Optimizer:
    """Adam over every parameter, with the model's learning rate and weight decay."""
    return torch.optim.Adam(model.parameters(), lr=model.hparams.learning_rate, weight_decay=model.hparams.weight_decay)


def epoch_batches(model: Recommender, pairs: np.ndarray, sampler: NegativeSampler, device: torch.device) -> torch.Tensor:
    """An epoch's `(3, n)` rows of (user, positive, sampled negative) in a fresh random order,
    after the model's `pre_epoch` hook."""
    model.train()
    model.pre_epoch()
    order = sampler.rng.permutation(len(pairs))
    users, positives = pairs[order, 0], pairs[order, 1]
    return torch.from_numpy(np.stack([users, positives, sampler.sample(users)])).to(device)


def train_batches(
    model: Recommender,
    optimizer: torch.optim.Optimizer,
    batches: torch.Tensor,
    batch_size: int,
    max_batches: int | None = None,
) -> float:
    """One optimizer step per `batch_size` columns of `batches` (the first `max_batches` only,
    when given: a benchmark times part of an epoch); the mean loss over the rows trained on."""
    n_rows = batches.shape[1] if max_batches is None else min(batches.shape[1], max_batches * batch_size)
    total = 0.0
    for start in range(0, n_rows, batch_size):
        u, p, n = batches[:, start : start + batch_size]
        loss = model.calculate_loss(u, p, n)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(u)
    return total / n_rows


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
    with its best weights in eval mode, a content model's cold map fitted to them
    (`fit_cold_map`, the explicit step after training), written to `checkpoint` at every
    improvement and, at the end, with the fitted map, so export serves what evaluation measured.

    Without an `evaluator` (a refit on every interaction) it trains exactly `config.epochs`
    epochs, the count validation chose, and keeps the last weights.
    """
    device = next(model.parameters()).device
    optimizer = adam(model)
    sampler = NegativeSampler(graph, np.random.default_rng(seed))
    result = FitResult(best_epoch=0, best_valid={})
    best_state: dict[str, torch.Tensor] = {}
    best_score = -1.0
    bar = tqdm(range(1, config.epochs + 1), desc=description, disable=not progress, leave=False)
    for epoch in bar:
        started = time.perf_counter()
        loss = train_batches(model, optimizer, epoch_batches(model, graph.edges, sampler, device), config.batch_size)
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
    if isinstance(model, ContentRecommender):
        model.fit_cold_map()  # enters eval mode, then fits the cold-start map to the final weights
    else:
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
