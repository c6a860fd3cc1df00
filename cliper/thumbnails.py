"""Small JPEG thumbnails of a bundle's items, in two flat files.

`thumbnails.bin` holds the JPEGs one after the other and `thumbnail_offsets.npy` where each
item's starts and ends (`offsets[row]:offsets[row + 1]`; an item without an image has an empty
range). The service memory-maps both, so a bundle of a million thumbnails costs no start-up time
and only the pages clients ask for.
"""

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

THUMBNAILS = "thumbnails.bin"
THUMBNAIL_OFFSETS = "thumbnail_offsets.npy"
THUMBNAIL_SIDE = 160  # pixels, the longer side
THUMBNAIL_QUALITY = 80  # JPEG quality


def thumbnail_jpeg(image: Image.Image, side: int = THUMBNAIL_SIDE, quality: int = THUMBNAIL_QUALITY) -> bytes:
    """A JPEG of `image` shrunk (never enlarged) to at most `side` pixels on its longer side."""
    picture = image.convert("RGB")
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def write_thumbnails(folder: Path, jpegs: Sequence[bytes | None]) -> None:
    """Write `thumbnails.bin` and `thumbnail_offsets.npy` for `jpegs` (one per item row) into `folder`."""
    sizes = np.array([0 if jpeg is None else len(jpeg) for jpeg in jpegs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    with (folder / THUMBNAILS).open("wb") as handle:
        for jpeg in jpegs:
            if jpeg:
                handle.write(jpeg)
    np.save(folder / THUMBNAIL_OFFSETS, offsets)


class Thumbnails:
    """The thumbnails of a bundle, read on demand."""

    def __init__(self, folder: Path, n_items: int) -> None:
        self.offsets = np.load(folder / THUMBNAIL_OFFSETS, mmap_mode="r")
        size = (folder / THUMBNAILS).stat().st_size
        if self.offsets.shape != (n_items + 1,) or self.offsets[0] != 0 or self.offsets[-1] != size:
            raise ValueError(f"{folder / THUMBNAIL_OFFSETS} does not describe {n_items} thumbnails in "
                             f"{size} bytes of {THUMBNAILS}")
        # an empty file cannot be memory-mapped: a bundle whose items have no images reads nothing
        self.data = np.memmap(folder / THUMBNAILS, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)

    def get(self, row: int) -> bytes | None:
        """The JPEG of item row `row`, or None when it has none."""
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return bytes(self.data[start:end]) if end > start else None
