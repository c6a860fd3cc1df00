"""CLIP loading: a shipped config, or any open_clip architecture with a pretrained tag or file.

Everything goes through open_clip's own factory, so `--model ViT-B-32 --pretrained
laion2b_s34b_b79k` (or a local `open_clip_pytorch_model.bin`) loads exactly as open_clip loads
it. The shipped configs in `configs/` add two small models for this project: `cliper-tiny`
(random init, for tests) and `cliper-minilm` (a LiT-style stand-in whose text tower is the
installed MiniLM sentence encoder, resolved from its Python package at run time).
"""

import hashlib
import importlib.resources
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.hf_model import HFTextEncoder
from open_clip.tokenizer import SimpleTokenizer

from cliper.images import PreprocessConfig
from offline.config import ConfigError, StrictModel

CONFIG_DIR = Path(__file__).parent / "configs"
SHIPPED_MODELS = tuple(sorted(path.stem for path in CONFIG_DIR.glob("*.json")))
HF_PACKAGE_KEY = "hf_model_package"  # "package:folder", replaced by the folder's absolute path
INIT_SEED = 0  # random-init weights are seeded, so an untrained model is reproducible
CLIP_FILE = "clip.json"


class ClipSpec(StrictModel):
    """Which CLIP to load.

    `model`: a shipped config (`cliper-tiny`, `cliper-minilm`) or an open_clip architecture
    (`ViT-B-32`, ...). `pretrained`: an open_clip pretrained tag or a local checkpoint file;
    None = random init (a shipped HF text tower still starts from its own weights).
    `checkpoint`: a file written by train-clip; it holds every weight, so `pretrained` is then
    only a record of where training started.
    """

    model: str = "cliper-minilm"
    pretrained: str | None = None
    checkpoint: Path | None = None


def shipped_configs() -> dict[str, dict[str, Any]]:
    """The open_clip configs in `configs/`, with package folders resolved to absolute paths."""
    configs = {}
    for path in sorted(CONFIG_DIR.glob("*.json")):
        config = json.loads(path.read_text(encoding="utf-8"))
        text = config["text_cfg"]
        if HF_PACKAGE_KEY in text:
            folder = _package_folder(text.pop(HF_PACKAGE_KEY))
            text["hf_model_name"] = text["hf_tokenizer_name"] = str(folder)
        configs[path.stem] = config
    return configs


def register_configs() -> None:
    """Make the shipped configs known to open_clip by name.

    open_clip's public `add_model_config` only reads files, and ours must name a folder inside
    an installed package that is only known at run time, so the resolved configs go straight
    into the registry that `add_model_config` fills.
    """
    open_clip.factory._MODEL_CONFIGS.update(shipped_configs())


def _package_folder(reference: str) -> Path:
    package, _, folder = reference.partition(":")
    try:
        path = Path(str(importlib.resources.files(package) / folder))
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the CLIP config needs the Python package {package!r}; install it "
            f"(pip install {package.replace('_', '-')})"
        ) from exc
    if not path.is_dir():
        raise ConfigError(f"package {package!r} has no folder {folder!r} (looked in {path})")
    return path


@dataclass
class ClipHandle:
    """A loaded CLIP (eval mode) with its tokenizer and image preprocessing.

    Embeddings are raw CLIP outputs, not normalised: normalising is the consumers' job.
    """

    spec: ClipSpec
    model: torch.nn.Module
    tokenizer: Callable[..., torch.Tensor]
    preprocess_config: PreprocessConfig
    context_length: int
    device: torch.device
    identity: dict[str, Any]

    @property
    def hf_text(self) -> HFTextEncoder | None:
        """The Hugging Face text tower, when the model has one (its padding can be trimmed)."""
        text = getattr(self.model, "text", None)
        return text if isinstance(text, HFTextEncoder) else None

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` with special tokens, as the tokenizer makes them before truncation.

        For tokenizers that clean text further (SigLIP's canonicalisation) this is an upper
        bound, which is what chunking needs.
        """
        if isinstance(self.tokenizer, SimpleTokenizer):
            return len(self.tokenizer.encode(text)) + 2  # start and end of text
        clean = getattr(self.tokenizer, "clean_fn", str)
        hf_tokenizer = self.tokenizer.tokenizer  # type: ignore[attr-defined]
        return len(hf_tokenizer(clean(text), verbose=False)["input_ids"])

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids (B, context_length), truncated and padded by the model's tokenizer."""
        return self.tokenizer(list(texts))

    @torch.no_grad()
    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) preprocessed pixels -> (B, D) float32 image embeddings."""
        batch = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(self.device)
        return self.model.encode_image(batch).float().cpu().numpy()

    def text_input(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids ready for `model.encode_text` on the device (padding trimmed when exact)."""
        if self.hf_text is not None:
            tokens = trim_padding(tokens, self.hf_text.config.pad_token_id)
        return tokens.to(self.device)

    @torch.no_grad()
    def encode_tokens(self, tokens: torch.Tensor) -> np.ndarray:
        """Token ids from `tokenize` -> (B, D) float32 text embeddings."""
        return self.model.encode_text(self.text_input(tokens)).float().cpu().numpy()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (B, D) float32 text embeddings (truncated to the context length)."""
        return self.encode_tokens(self.tokenize(texts))


def trim_padding(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Drop the trailing columns that are padding in every row.

    A Hugging Face tower masks padding out of attention and mean pooling, so this changes no
    embedding and saves the work on short prompts padded to the full context.
    """
    used = (tokens != pad_id).any(dim=0).nonzero()
    return tokens[:, : int(used.max()) + 1] if len(used) else tokens[:, :1]


def resolve_device(device: str) -> torch.device:
    """`auto`: the GPU when there is one, else the CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_clip(spec: ClipSpec, device: str | torch.device = "cpu") -> ClipHandle:
    """Load a CLIP in eval mode on `device` (see `ClipSpec`)."""
    register_configs()
    device = torch.device(device)
    if spec.checkpoint is not None and not Path(spec.checkpoint).is_file():
        raise ConfigError(f"CLIP checkpoint not found: {spec.checkpoint}")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            if spec.checkpoint is not None:
                # every weight comes from the checkpoint: skip downloads and base tower weights
                with _without_init_warning():
                    model = open_clip.create_model(spec.model, pretrained_text=False)
            else:
                model = open_clip.create_model(spec.model, pretrained=spec.pretrained)
    except RuntimeError as exc:
        raise ConfigError(_model_error(spec, exc)) from exc
    if spec.checkpoint is not None:
        saved = torch.load(spec.checkpoint, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(saved["state_dict"])
        except RuntimeError as exc:
            raise ConfigError(
                f"checkpoint {spec.checkpoint} does not fit the {spec.model!r} architecture "
                f"(was it trained with another config?): {exc}"
            ) from exc
        open_clip.set_model_preprocess_cfg(model, saved["preprocess_cfg"])
    model.to(device).eval()
    tokenizer = open_clip.get_tokenizer(spec.model)
    handle = ClipHandle(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        preprocess_config=preprocess_config(model),
        context_length=int(tokenizer.context_length),
        device=device,
        identity={},
    )
    handle.identity = _identity(handle)
    return handle


@contextmanager
def _without_init_warning() -> Iterator[None]:
    """Hide open_clip's "initialized randomly" warning, wrong when a checkpoint loads next."""

    def keep(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _model_error(spec: ClipSpec, exc: RuntimeError) -> str:
    if spec.model not in open_clip.list_models():
        return (
            f"unknown CLIP model {spec.model!r}: use a shipped config {SHIPPED_MODELS} or an "
            f"open_clip architecture such as ViT-B-32 (see open_clip.list_models())"
        )
    tags = open_clip.list_pretrained_tags_by_model(spec.model)
    return (
        f"cannot load CLIP {spec.model!r} with pretrained={spec.pretrained!r}: {exc}. "
        f"Give a local checkpoint file or one of its tags {tags}"
    )


def preprocess_config(model: torch.nn.Module) -> PreprocessConfig:
    """The model's image preprocessing (open_clip's eval transform) as a `PreprocessConfig`."""
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"]
    if not isinstance(size, int):
        if size[0] != size[1]:
            raise ConfigError(f"only square CLIP inputs are supported, the model wants {size}")
        size = size[0]
    values = {"image_size": size, "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}
    values.update({key: cfg[key] for key in ("resize_mode", "interpolation") if key in cfg})
    return PreprocessConfig.model_validate(values)


def save_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """Write every weight plus the preprocessing, in the format `load_clip` reads."""
    torch.save(
        {
            "state_dict": model.state_dict(),
            "preprocess_cfg": dict(open_clip.get_model_preprocess_cfg(model)),
        },
        path,
    )


def read_clip_spec(path: Path) -> ClipSpec:
    """A `clip.json` written by train-clip (or its folder); its checkpoint path is relative."""
    path = Path(path)
    file = path / CLIP_FILE if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"{file} not found: is {path} a train-clip output folder?")
    spec = ClipSpec.model_validate_json(file.read_text(encoding="utf-8"))
    if spec.checkpoint is not None and not spec.checkpoint.is_absolute():
        spec = spec.model_copy(update={"checkpoint": file.parent / spec.checkpoint})
    return spec


def write_clip_spec(spec: ClipSpec, folder: Path) -> Path:
    """Write `folder/clip.json`, with the checkpoint path relative to the folder."""
    if spec.checkpoint is not None:
        spec = spec.model_copy(update={"checkpoint": Path(spec.checkpoint).relative_to(folder)})
    file = folder / CLIP_FILE
    file.write_text(spec.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return file


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _identity(handle: ClipHandle) -> dict[str, Any]:
    """What makes two loaded CLIPs give the same embeddings: for manifests and cache keys."""
    spec = handle.spec
    weights = spec.checkpoint
    if weights is None and spec.pretrained is not None and Path(spec.pretrained).is_file():
        weights = Path(spec.pretrained)
    return {
        "model": spec.model,
        "pretrained": spec.pretrained,
        "weights_sha256": file_sha256(Path(weights)) if weights is not None else None,
        "embed_dim": int(handle.encode_texts(["a"]).shape[1]),
        "image_size": handle.preprocess_config.image_size,
        "context_length": handle.context_length,
        "tokenizer": type(handle.tokenizer).__name__,
        "open_clip_version": open_clip.__version__,
    }
