"""A small but real model bundle for the service tests.

Tiny torch modules (an image encoder, a token-embedding text encoder, and the item tower with
CLIPER attention fusion of `offline.export.synthetic_bundle`) are exported to ONNX and written
with `cliper.bundle.write_bundle`, next to the MiniLM `tokenizer.json`. Items come in clusters: each cluster has its own image colour and
its own words, so their vectors (computed here with the torch modules, i.e. the "offline" path,
with open_clip's HF tokenizer) cluster too. Users are noisy cluster centres and have seen a few
items of their cluster, so "the right cluster ranks first" is a meaningful test.
"""

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from open_clip.tokenizer import HFTokenizer
from PIL import Image
from torch import nn

from cliper.bundle import BundleContent, Seen, write_bundle
from cliper.encoding import ItemEncoding, encode_clip
from cliper.images import PreprocessConfig, preprocess
from cliper.manifest import Manifest
from cliper.thumbnails import thumbnail_jpeg
from cliper.views import chunk_prompts, load_views
from offline.export.synthetic_bundle import MINILM_DIR, TOKENIZER_JSON, ItemTower, export_graphs, manifest_fields

CLUSTER_WORDS = [
    ["coffee", "espresso", "mug", "ceramic", "kettle", "teapot"],
    ["guitar", "piano", "violin", "drum", "trumpet", "flute"],
    ["soccer", "tennis", "basketball", "racket", "helmet", "sneaker"],
    ["garden", "flower", "tulip", "shovel", "seed", "fern"],
]
CLUSTER_COLOURS = [(210, 40, 40), (40, 190, 60), (40, 60, 210), (220, 200, 30)]
FILLER = ["classic", "durable", "modern", "compact", "premium", "light", "bright", "sturdy"]


@dataclass
class SyntheticItem:
    item_id: str
    cluster: int
    fields: dict[str, str]
    image: bytes  # PNG


class ImageEncoder(nn.Module):
    """pixel_values [B,3,S,S] -> image_features [B,D]: strided conv, ReLU, global mean, linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 24, kernel_size=4, stride=4)
        self.proj = nn.Linear(24, dim)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.relu(self.conv(pixel_values)).mean(dim=(2, 3)))


class TextEncoder(nn.Module):
    """input_ids [B,L] (+ attention_mask) -> text_features [B,D]: masked mean of token embeddings."""

    def __init__(self, vocab: int, dim: int, pad_id: int, attention_mask: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pad_id = pad_id
        self.uses_mask = attention_mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = attention_mask if self.uses_mask else (input_ids != self.pad_id)
        weights = mask.unsqueeze(-1).to(torch.float32)
        return (self.embed(input_ids) * weights).sum(1) / weights.sum(1).clamp(min=1.0)


@dataclass
class Reference:
    """The torch ("offline") path: open_clip tokenizer, chunking, the modules; for parity checks."""

    image: nn.Module
    text: nn.Module
    tower: nn.Module
    manifest_fields: dict
    tokenizer: HFTokenizer = field(init=False)

    def __post_init__(self) -> None:
        spec = self.manifest_fields["tokenizer"]
        self.tokenizer = HFTokenizer(str(MINILM_DIR), context_length=spec["context_length"], clean=spec["clean"])
        self.views = load_views("products")
        self.preprocess = PreprocessConfig.model_validate(self.manifest_fields["preprocess"])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.tokenizer(self.tokenizer.clean_fn(text))["input_ids"])

    def item_vectors(self, items: list[tuple[dict[str, str], bytes]]) -> np.ndarray:
        return self.encode(items).vector

    @torch.no_grad()
    def encode(self, items: list[tuple[dict[str, str], bytes]]) -> ItemEncoding:
        """The items' encodings by the torch modules (the offline path)."""
        chunking = self.manifest_fields["chunking"]
        context = self.manifest_fields["tokenizer"]["context_length"]
        pixels = torch.from_numpy(np.stack([
            preprocess(Image.open(io.BytesIO(image)).convert("RGB"), self.preprocess) for _, image in items
        ]))
        views = []
        for fields, _ in items:
            pooled = []
            for template, value in self.views.view_texts(fields):
                prompts = chunk_prompts(template, value, self.count_tokens, context, chunking["max_chunks"])
                ids = self.tokenizer(prompts)
                features = self.text(ids, (ids != 0).long())
                pooled.append(features.mean(0) if chunking["pooling"] == "mean" else features.sum(0))
            views.append(torch.stack(pooled))
        image, text_views = self.image(pixels), torch.stack(views)
        vectors, weights = self.tower(image, text_views)
        clip_image, clip_text = encode_clip(image.numpy(), text_views.numpy(), weights.numpy())
        return ItemEncoding(vectors.numpy(), clip_image, clip_text, weights.numpy())


@dataclass
class FactoryBundle:
    path: Path
    manifest: Manifest
    items: list[SyntheticItem]
    user_clusters: dict[str, int]
    seen: dict[str, list[str]]
    reference: Reference

    def offline_vector(self, fields: dict[str, str], image: bytes) -> np.ndarray:
        return self.reference.item_vectors([(fields, image)])[0]

    def offline_encoding(self, fields: dict[str, str], image: bytes) -> ItemEncoding:
        encoding = self.reference.encode([(fields, image)])
        return ItemEncoding(*(part[0] for part in (encoding.vector, encoding.clip_image, encoding.clip_text,
                                                   encoding.view_weights)))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_item(rng: np.random.Generator, cluster: int, item_id: str, long_text: bool = False) -> SyntheticItem:
    """A noisy item of `cluster`: tinted image with a random box, cluster words plus filler."""
    words = CLUSTER_WORDS[cluster]
    colour = np.array(CLUSTER_COLOURS[cluster]) + rng.integers(-25, 26, 3)
    width, height = int(rng.integers(36, 72)), int(rng.integers(36, 72))
    pixels = np.clip(colour + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    x, y = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    pixels[y : y + height // 3, x : x + width // 3] = rng.integers(0, 256, 3)
    description_words = [str(rng.choice(words + FILLER)) for _ in range(80 if long_text else 8)]
    fields = {
        "title": f"{rng.choice(FILLER)} {rng.choice(words)} {rng.choice(words)}",
        "brand": f"{words[0].title()}Co",
        "categories": f"{words[1]}|{words[2]}",
        "description": " ".join(description_words),
    }
    if rng.random() < 0.2:
        del fields["brand"]  # a missing field reads as "Missing"
    return SyntheticItem(item_id, cluster, fields, png(Image.fromarray(pixels)))


def prototype_item(cluster: int, item_id: str) -> SyntheticItem:
    """The cleanest item of a cluster: its pure colour and only its words."""
    words = CLUSTER_WORDS[cluster]
    fields = {"title": f"{words[0]} {words[1]}", "brand": f"{words[0].title()}Co",
              "categories": f"{words[1]}|{words[2]}", "description": " ".join(words)}
    return SyntheticItem(item_id, cluster, fields, png(Image.new("RGB", (48, 48), CLUSTER_COLOURS[cluster])))


def build_bundle(
    out_dir: Path,
    *,
    n_items: int = 240,
    n_users: int = 48,
    dim: int = 16,
    item_dim: int = 16,
    image_size: int = 32,
    context_length: int = 32,
    max_chunks: int = 3,
    pooling: str = "mean",
    attention_mask: bool = True,
    index_factory: str = "Flat",
    search_params: str = "",
    seed: int = 0,
) -> FactoryBundle:
    """A bundle whose item vectors come from running its own (torch) models on clustered items."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    fields = manifest_fields(dim, item_dim, image_size, context_length, max_chunks, pooling, attention_mask,
                             index_factory, search_params)
    image, text, tower = ImageEncoder(dim), TextEncoder(30522, dim, 0, attention_mask), ItemTower(dim, item_dim, 0.5)
    reference = Reference(image.eval(), text.eval(), tower.eval(), fields)
    n_clusters = len(CLUSTER_WORDS)
    items = [make_item(rng, i % n_clusters, f"item-{i:04d}", long_text=i % 10 == 0) for i in range(n_items)]
    encodings = reference.encode([(item.fields, item.image) for item in items])
    user_ids = [f"user-{u:03d}" for u in range(n_users)]
    user_clusters = {user: u % n_clusters for u, user in enumerate(user_ids)}
    prototypes = [prototype_item(c, f"prototype-{c}") for c in range(n_clusters)]
    tastes = reference.item_vectors([(item.fields, item.image) for item in prototypes])
    user_vectors = np.stack([tastes[c] + rng.normal(0, 0.02, item_dim) for c in user_clusters.values()])
    n_seen = min(5, n_items // n_clusters)
    seen = {user: sorted(rng.choice(np.arange(c, n_items, n_clusters), n_seen, replace=False).tolist())
            for user, c in user_clusters.items()}
    pairs = np.array([[u, i] for u, user in enumerate(user_ids) for i in seen[user]])
    popularity = np.bincount(pairs[:, 1], minlength=n_items).astype(np.float32) + rng.integers(0, 3, n_items)
    graphs_dir = out_dir.parent / f".{out_dir.name}-graphs"
    graphs_dir.mkdir(parents=True, exist_ok=True)
    paths = export_graphs(graphs_dir, image, text, tower, fields)
    content = BundleContent(
        image_encoder=paths["image_encoder"], text_encoder=paths["text_encoder"], item_tower=paths["item_tower"],
        tokenizer=TOKENIZER_JSON, user_ids=user_ids, user_vectors=user_vectors.astype(np.float32),
        item_ids=[item.item_id for item in items], item_vectors=encodings.vector,
        seen=Seen.from_pairs(pairs, n_users), popularity=popularity, item_fields=[item.fields for item in items],
        clip_image=encodings.clip_image, clip_text=encodings.clip_text, view_weights=encodings.view_weights,
        thumbnails=[thumbnail_jpeg(Image.open(io.BytesIO(item.image))) for item in items],
    )
    manifest = write_bundle(out_dir, fields, content)
    seen_ids = {user: [items[i].item_id for i in rows] for user, rows in seen.items()}
    return FactoryBundle(out_dir, manifest, items, user_clusters, seen_ids, reference)


