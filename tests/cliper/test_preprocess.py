"""cliper.images.preprocess (numpy, no torch) matches open_clip's eval transform; decode_image
refuses what would be too costly to preprocess."""

import io
import struct
import zlib

import numpy as np
import pytest
from open_clip import image_transform
from PIL import Image

from cliper.images import PreprocessConfig, decode_image, preprocess, preprocess_batch


def _image(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    """A random picture in `mode` (noise plus a gradient, so resampling has work to do)."""
    rng = np.random.default_rng(seed)
    width, height = size
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    noise = rng.integers(0, 256, (height, width, 4)).astype(np.float32)
    pixels = ((noise + gradient) / 2).astype(np.uint8)
    rgba = Image.fromarray(pixels, "RGBA")
    if mode == "P":
        return rgba.convert("RGB").quantize(colors=64)
    return rgba.convert(mode)


CASES = [
    ("RGB", (300, 450)),  # a poster
    ("RGB", (640, 480)),
    ("RGBA", (200, 150)),
    ("L", (120, 90)),
    ("P", (97, 131)),
    ("RGB", (7, 5)),  # tiny: upsampled
    ("RGB", (800, 60)),  # wide
    ("RGB", (48, 500)),  # tall
    ("RGB", (224, 224)),  # already the right size
]


@pytest.mark.parametrize("size", [224, 64])
@pytest.mark.parametrize(("seed", "mode", "image_size"), [(i, *case) for i, case in enumerate(CASES)])
def test_matches_open_clip_eval_transform(
    seed: int, mode: str, image_size: tuple[int, int], size: int
) -> None:
    image = _image(mode, image_size, seed)
    expected = image_transform(size, is_train=False)(image).numpy()
    got = preprocess(image, PreprocessConfig(image_size=size))
    assert got.dtype == np.float32 and got.shape == (3, size, size)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_matches_open_clip_for_each_setting(resize_mode: str, interpolation: str) -> None:
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # SigLIP-style normalisation
    config = PreprocessConfig(
        image_size=96, mean=mean, std=std, resize_mode=resize_mode, interpolation=interpolation
    )
    transform = image_transform(
        96, is_train=False, mean=mean, std=std, resize_mode=resize_mode, interpolation=interpolation
    )
    image = _image("RGB", (150, 333), seed=3)
    np.testing.assert_allclose(preprocess(image, config), transform(image).numpy(), atol=1e-5, rtol=0)


def test_batch_stacks_images() -> None:
    config = PreprocessConfig(image_size=32)
    images = [_image("RGB", (40, 60), seed=1), _image("L", (50, 50), seed=2)]
    batch = preprocess_batch(images, config)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1], preprocess(images[1], config))


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 20, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds almost no pixel data: it cannot be decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


@pytest.mark.parametrize("size", [(1, 400_000), (400_000, 1), (2, 100_000), (100_000, 3), (21, 1), (1, 21)])
def test_decode_refuses_shapes_beyond_the_aspect_ratio_limit(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=r"aspect ratio .* at most 20:1"):
        decode_image(_png(size), max_pixels=40_000_000, max_aspect_ratio=20)


def test_decode_checks_the_aspect_ratio_before_decoding() -> None:
    # 10 million pixels are under the pixel limit; only the header's shape can refuse it cheaply
    with pytest.raises(ValueError, match="aspect ratio"):
        decode_image(_png_header(1, 10_000_000), max_pixels=40_000_000, max_aspect_ratio=20)


@pytest.mark.parametrize("size", [(20, 1), (1, 20), (4000, 3000), (970, 90), (1, 1)])
def test_decode_accepts_shapes_within_the_limit(size: tuple[int, int]) -> None:
    image = decode_image(_png(size), max_pixels=40_000_000, max_aspect_ratio=20)
    assert image.size == size
