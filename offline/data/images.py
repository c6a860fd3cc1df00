"""Image loading that survives bad files: a long run never stops on one broken image.

A missing, unreadable, truncated or oversized (decompression bomb) image is replaced by a
placeholder; each one is recorded with its reason and summarised in one warning at the end.
"""

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

PLACEHOLDER_SIZE = (224, 224)
PLACEHOLDER_COLOR = (128, 128, 128)


def load_rgb(path: Path, max_pixels: int | None = None) -> Image.Image:
    """Open an image fully decoded as RGB; raises on any problem (see `ImageLoader`).

    `max_pixels` (default: Pillow's `Image.MAX_IMAGE_PIXELS`) bounds width x height, checked
    from the header before decoding.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            width, height = image.size
            if limit is not None and width * height > limit:
                raise Image.DecompressionBombError(
                    f"{width}x{height} = {width * height} pixels exceeds the limit of {limit}"
                )
            return image.convert("RGB")


@dataclass
class ImageLoader:
    """Loads item images, returning a placeholder (and recording why) for bad ones."""

    placeholder_size: tuple[int, int] = PLACEHOLDER_SIZE
    placeholder_color: tuple[int, int, int] = PLACEHOLDER_COLOR
    max_pixels: int | None = None
    bad_images: list[tuple[str, str]] = field(default_factory=list)
    loaded: int = 0

    def placeholder(self) -> Image.Image:
        return Image.new("RGB", self.placeholder_size, self.placeholder_color)

    def load(self, item_id: str, path: Path | None) -> Image.Image:
        """The item's image, or the placeholder when it has none or it cannot be decoded."""
        self.loaded += 1
        reason = self._problem(path)
        if reason is None:
            try:
                return load_rgb(path, self.max_pixels)  # type: ignore[arg-type]
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                reason = f"decompression bomb: {exc}"
            except (OSError, ValueError, SyntaxError) as exc:  # Pillow's decode errors
                reason = f"unreadable: {type(exc).__name__}: {exc}"
        self.bad_images.append((item_id, reason))
        return self.placeholder()

    @staticmethod
    def _problem(path: Path | None) -> str | None:
        if path is None:
            return "no image path"
        if not Path(path).is_file():
            return f"missing file: {path}"
        return None

    def summary(self) -> str:
        """One line: how many images were bad, with a few examples."""
        if not self.bad_images:
            return f"all {self.loaded} images loaded"
        examples = "; ".join(f"{item}: {reason}" for item, reason in self.bad_images[:3])
        return (
            f"{len(self.bad_images)} of {self.loaded} images could not be used and were "
            f"replaced by a placeholder, e.g. {examples}"
        )

    def warn_if_bad(self) -> None:
        """Log the summary as a warning when any image was bad."""
        if self.bad_images:
            log.warning(self.summary())
