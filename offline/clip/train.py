"""train-clip: contrastive training of a CLIP on (image, caption) pairs, with a retrieval report.

The pairs come from a caption corpus (`captions.csv`) or a catalog (`items.csv`); each image's
captions are its view prompts, so the CLIP learns the wording it meets at feature time. A
seeded share of the images (with all their captions) is held out to measure image-to-text
Recall@1/5 on unseen images before and after training.

Made to run on a few CPU cores: images are decoded and preprocessed once into a tensor (the
augmentation, a random resized crop, works on that tensor), and a locked (LiT) Hugging Face
text tower runs once per caption up front, so each step trains only the image tower and the
text projection.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from pydantic import Field
from torchvision.transforms import v2
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from cliper.images import PreprocessConfig, preprocess_batch
from cliper.views import ViewsConfig
from offline.clip.alignment import image_to_text_recall
from offline.clip.model import ClipHandle, ClipSpec, load_clip, resolve_device, save_checkpoint, write_clip_spec
from offline.config import ConfigError, StrictModel
from offline.data.catalog import IMAGE_COLUMN, ITEMS_FILE, load_catalog
from offline.data.corpus import CAPTIONS_FILE, CaptionCorpus, load_corpus
from offline.data.images import ImageLoader

CLIP_DIR = "clip"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"
MAX_LOGIT_SCALE = float(np.log(100.0))  # CLIP's clamp on the learned temperature
ENCODE_BATCH = 256
TRAIN_EVAL_IMAGES = 500  # train-set retrieval is measured on at most this many images
SCRATCH_LR = 1e-3
FINETUNE_LR = 1e-5


class TrainClipConfig(StrictModel):
    """Settings of train-clip; defaults suit the cliper-minilm stand-in on ~2k pairs on a CPU."""

    clip: ClipSpec = ClipSpec()
    epochs: int = Field(15, ge=0)
    batch_size: int = Field(128, ge=2)
    lr: float | None = Field(None, gt=0)  # None: 1e-3 from random init, 1e-5 from pretrained weights
    weight_decay: float = Field(0.1, ge=0)
    warmup: float = Field(0.1, ge=0, lt=1)  # share of the steps
    holdout: float = Field(0.1, gt=0, lt=1)  # share of the images held out for the report
    seed: int = 0
    # LiT: freeze the text tower (a Hugging Face one keeps its projection trainable).
    # None: lock a Hugging Face text tower (pretrained language model), train any other.
    lock_text: bool | None = None
    crop_scale: tuple[float, float] = (0.8, 1.0)  # random resized crop, share of the image area
    columns: dict[str, str] = {}  # view column -> corpus column, e.g. {genres: genre}
    device: str = "auto"  # auto: cuda when available, else cpu


@dataclass
class CaptionedImages:
    """Images and, per image, indices into `captions` (its view prompts, global last)."""

    files: list[Path]
    ids: list[str]
    caption_ids: list[list[int]]
    captions: list[str]

    @classmethod
    def from_corpus(cls, corpus: CaptionCorpus) -> "CaptionedImages":
        prompts = corpus.prompts()
        captions = list(dict.fromkeys(text for texts in prompts for text in texts))
        index = {text: i for i, text in enumerate(captions)}
        return cls(
            files=corpus.image_files(),
            ids=[str(path.relative_to(corpus.root)) for path in corpus.image_files()],
            caption_ids=[[index[text] for text in texts] for texts in prompts],
            captions=captions,
        )

    def subset(self, keep: np.ndarray) -> "CaptionedImages":
        return CaptionedImages(
            [self.files[i] for i in keep],
            [self.ids[i] for i in keep],
            [self.caption_ids[i] for i in keep],
            self.captions,
        )


def load_pairs(data: Path, views: ViewsConfig | str | Path | None, columns: dict[str, str]) -> CaptionCorpus:
    """A caption corpus folder, or a catalog folder's items that have an image."""
    data = Path(data)
    if (data / CAPTIONS_FILE).is_file():
        return load_corpus(data, views, columns)
    if (data / ITEMS_FILE).is_file():
        if columns:
            raise ConfigError("column mappings apply to caption corpora; rename a catalog's columns")
        catalog = load_catalog(data, views)
        items = catalog.items[catalog.items[IMAGE_COLUMN].str.strip() != ""]
        return CaptionCorpus(catalog.root, items.reset_index(drop=True), catalog.views)
    raise ConfigError(f"{data} holds neither {CAPTIONS_FILE} (a caption corpus) nor {ITEMS_FILE} (a catalog)")


def cache_pixels(
    files: list[Path], ids: list[str], config: PreprocessConfig, loader: ImageLoader, desc: str
) -> np.ndarray:
    """Decode and preprocess every image once: (N, 3, S, S) float32."""
    batches = []
    for start in tqdm(range(0, len(files), ENCODE_BATCH), desc=desc, unit="batch", leave=False):
        stop = start + ENCODE_BATCH
        images = [loader.load(item, path) for item, path in zip(ids[start:stop], files[start:stop])]
        batches.append(preprocess_batch(images, config))
    size = config.image_size
    return np.concatenate(batches) if batches else np.zeros((0, 3, size, size), np.float32)


def text_encoder(handle: ClipHandle, tokens: torch.Tensor, lock: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Caption indices -> text features; the frozen part of a locked tower runs once, here."""
    if not lock:
        return lambda index: handle.model.encode_text(handle.text_input(tokens[index]))
    handle.model.lock_text_tower()
    hf = handle.hf_text
    if hf is None:  # a fully frozen tower: its outputs are fixed
        fixed = torch.from_numpy(_batched(handle.encode_tokens, tokens, "encoding captions")).to(handle.device)
        return lambda index: fixed[index]

    @torch.no_grad()
    def pooled(batch: torch.Tensor) -> np.ndarray:
        ids = handle.text_input(batch)
        mask = (ids != hf.config.pad_token_id).long()
        return hf.pooler(hf.transformer(input_ids=ids, attention_mask=mask), mask).float().cpu().numpy()

    hf.eval()
    hidden = torch.from_numpy(_batched(pooled, tokens, "encoding captions")).to(handle.device)
    return lambda index: hf.proj(hidden[index])


def _batched(encode: Callable[[torch.Tensor], np.ndarray], tokens: torch.Tensor, desc: str) -> np.ndarray:
    """Encode token rows in batches of similar length (so padding trims well), in input order.

    Length counts non-zero ids (0 pads CLIP's and BERT's tokenizers); any order is correct.
    """
    order = np.argsort(-(tokens != 0).sum(dim=1).numpy(), kind="stable")
    out: list[np.ndarray] = []
    for start in tqdm(range(0, len(order), ENCODE_BATCH), desc=desc, unit="batch", leave=False):
        out.append(encode(tokens[order[start : start + ENCODE_BATCH]]))
    result = np.concatenate(out)
    restored = np.empty_like(result)
    restored[order] = result
    return restored


def split_holdout(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) image indices; at least two held out, at least two trained."""
    if n < 4:
        raise ConfigError(f"train-clip needs at least 4 usable images, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    held = min(max(2, int(round(share * n))), n - 2)
    return np.sort(order[held:]), np.sort(order[:held])


class Trainer:
    """One contrastive training run over cached pixels and captions."""

    def __init__(self, handle: ClipHandle, data: CaptionedImages, pixels: np.ndarray, cfg: TrainClipConfig):
        self.handle, self.data, self.cfg = handle, data, cfg
        self.device = handle.device
        self.pixels = torch.from_numpy(pixels).to(self.device)
        tokens = handle.tokenize(data.captions)
        lock = handle.hf_text is not None if cfg.lock_text is None else cfg.lock_text
        self.text = text_encoder(handle, tokens, lock)
        size = handle.preprocess_config.image_size
        self.augment = v2.RandomResizedCrop(size, scale=cfg.crop_scale, antialias=True)
        self.loss = open_clip.ClipLoss()
        self.rng = np.random.default_rng(cfg.seed)

    def image_features(self, index: torch.Tensor, augment: bool) -> torch.Tensor:
        images = self.pixels[index]
        if augment:
            images = torch.stack([self.augment(image) for image in images])
        return self.handle.model.encode_image(images)

    @torch.no_grad()
    def recall(self, images: np.ndarray) -> dict[str, float]:
        """Image-to-text retrieval among `images`, each captioned by its global (last) prompt."""
        self.handle.model.eval()
        index = torch.from_numpy(images)
        image = torch.cat([self.image_features(b, False) for b in index.split(ENCODE_BATCH)])
        captions = torch.tensor([self.data.caption_ids[i][-1] for i in images])
        text = torch.cat([self.text(b) for b in captions.split(ENCODE_BATCH)])
        return image_to_text_recall(image.float().cpu().numpy(), text.float().cpu().numpy())

    def fit(self, train: np.ndarray, held: np.ndarray, epochs: int) -> list[dict[str, float]]:
        """Train on the `train` images; per epoch, the mean loss and held-out Recall@1/5."""
        model = self.handle.model
        batches = int(np.ceil(len(train) / self.cfg.batch_size))
        optimizer = torch.optim.AdamW(
            _param_groups(model, self.cfg.weight_decay), lr=self._lr(), betas=(0.9, 0.98), eps=1e-6, fused=True
        )
        total = epochs * batches
        schedule = get_cosine_schedule_with_warmup(optimizer, int(self.cfg.warmup * total), total)
        history = []
        bar = tqdm(total=total, desc="train-clip", unit="step")
        for epoch in range(epochs):
            model.train()
            losses = []
            for images in np.array_split(self.rng.permutation(train), batches):
                captions = [self.rng.choice(self.data.caption_ids[i]) for i in images]
                image = F.normalize(self.image_features(torch.from_numpy(images), True), dim=-1)
                text = F.normalize(self.text(torch.tensor(captions)), dim=-1)
                loss = self.loss(image, text, model.logit_scale.exp())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                losses.append(loss.item())
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
            recall = self.recall(held)
            history.append({"loss": float(np.mean(losses)), "heldout_r1": recall["r1"], "heldout_r5": recall["r5"]})
            bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]['loss']:.3f}", heldout_r5=f"{recall['r5']:.3f}")
        bar.close()
        model.eval()
        return history

    def _lr(self) -> float:
        if self.cfg.lr is not None:
            return self.cfg.lr
        pretrained = self.cfg.clip.pretrained is not None or self.cfg.clip.checkpoint is not None
        return FINETUNE_LR if pretrained else SCRATCH_LR


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: not on gains, biases, embeddings of one row or the scale."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 and "logit_scale" not in name else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_clip(
    data: Path, out: Path, cfg: TrainClipConfig, views: ViewsConfig | str | Path | None = None
) -> dict[str, Any]:
    """Train a CLIP on `data` (corpus or catalog) and write `out/clip/`; returns the metrics."""
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    torch.manual_seed(cfg.seed)
    corpus = load_pairs(data, views, cfg.columns)
    handle = load_clip(cfg.clip, resolve_device(cfg.device))
    seconds["load"] = time.perf_counter() - start

    data_all = CaptionedImages.from_corpus(corpus)
    loader = ImageLoader()
    pixels = cache_pixels(data_all.files, data_all.ids, handle.preprocess_config, loader, "caching images")
    loader.warn_if_bad()
    bad = {item for item, _ in loader.bad_images}
    usable = np.array([i for i, item in enumerate(data_all.ids) if item not in bad], dtype=np.int64)
    data_ok = data_all.subset(usable)
    train, held = split_holdout(len(usable), cfg.holdout, cfg.seed)
    seconds["cache_images"] = time.perf_counter() - start - seconds["load"]

    mark = time.perf_counter()
    trainer = Trainer(handle, data_ok, pixels[usable], cfg)
    seconds["cache_text"] = time.perf_counter() - mark
    train_eval = train[:TRAIN_EVAL_IMAGES]
    before = {"heldout": trainer.recall(held), "train": trainer.recall(train_eval)}

    mark = time.perf_counter()
    history = trainer.fit(train, held, cfg.epochs)
    seconds["train"] = time.perf_counter() - mark
    after = {"heldout": trainer.recall(held), "train": trainer.recall(train_eval)}

    folder = Path(out) / CLIP_DIR
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(handle.model, folder / CHECKPOINT_FILE)
    write_clip_spec(cfg.clip.model_copy(update={"checkpoint": folder / CHECKPOINT_FILE}), folder)
    seconds["total"] = time.perf_counter() - start
    metrics = {
        "data": str(data),
        "views": corpus.views.view_names,
        "images": len(data_all.files),
        "bad_images": [{"image": item, "reason": reason} for item, reason in loader.bad_images],
        "train_images": len(train),
        "heldout_images": len(held),
        "captions": len(data_ok.captions),
        "epochs": cfg.epochs,
        "steps_per_epoch": int(np.ceil(len(train) / cfg.batch_size)),
        "loss": [epoch["loss"] for epoch in history],
        "history": history,
        "retrieval": {split: {"before": before[split], "after": after[split]} for split in before},
        "device": str(handle.device),
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "config": cfg.model_dump(mode="json"),
    }
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics
