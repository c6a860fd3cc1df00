"""CLIP image preprocessing with Pillow and numpy, so the service needs no torch.

It reproduces open_clip's evaluation transform (resize, center crop, RGB, scale to [0, 1],
normalise) step for step; torchvision resizes PIL images with Pillow itself, so the two agree
to float rounding (a parity test checks it against open_clip).
"""

import io
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_INTERPOLATION = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class PreprocessConfig(BaseModel):
    """What the image encoder expects; written into the bundle's manifest."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    resize_mode: Literal["shortest", "squash"] = "shortest"
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"


def preprocess(image: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """One image -> float32 array (3, S, S), as open_clip's eval transform would give."""
    size = config.image_size
    resample = _INTERPOLATION[config.interpolation]
    if config.resize_mode == "squash":
        image = image.resize((size, size), resample)
    else:
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(size * long / short)
        new_size = (size, new_long) if width <= height else (new_long, size)
        if new_size != image.size:
            image = image.resize(new_size, resample)
        image = _center_crop(image, size)
    if image.mode != "RGB":
        image = image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    mean = np.asarray(config.mean, dtype=np.float32)
    std = np.asarray(config.std, dtype=np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1).copy()


def preprocess_batch(images: list[Image.Image], config: PreprocessConfig) -> np.ndarray:
    """A batch (B, 3, S, S) float32."""
    return np.stack([preprocess(image, config) for image in images]).astype(np.float32, copy=False)


def decode_image(data: bytes, max_pixels: int, max_aspect_ratio: float) -> Image.Image:
    """Decode image bytes fully, refusing images over `max_pixels` or with a long side over
    `max_aspect_ratio` times the short side before decoding them.

    The aspect ratio bounds the cost of `preprocess`: the shortest-side resize makes an image of
    size x (size * ratio) pixels before the centre crop, so a 1.6 KB PNG of 1x400000 pixels would
    otherwise become 224 x 89.6 million pixels (80 GB). Raises `ValueError` with a message fit
    for a client: not an image, truncated, too large, too elongated.
    """
    try:
        image = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError as exc:
        raise ValueError("the image is not a format Pillow can read (send JPEG, PNG or WebP)") from exc
    except Image.DecompressionBombError as exc:  # Pillow's own guard, for images far over its limit
        raise ValueError(f"the image is too large to decode; at most {max_pixels} pixels are accepted") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ValueError(
            f"the image is {width}x{height} pixels; at most {max_pixels} pixels are accepted"
        )
    long, short = max(width, height), min(width, height)
    if long > max_aspect_ratio * short:
        raise ValueError(
            f"the image is {width}x{height} pixels, an aspect ratio (long side to short side) of"
            f" {long / max(short, 1):.0f}:1; at most {max_aspect_ratio:g}:1 is accepted"
        )
    try:
        image.load()
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"the image bytes are corrupt or truncated: {exc}") from exc
    return image


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    left = int(round((width - size) / 2.0))
    top = int(round((height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))
