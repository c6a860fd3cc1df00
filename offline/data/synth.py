"""A synthetic shop whose images and text carry the same latent attributes, with planted noise.

Every item has latent attributes (category, colour, pattern, size, brand, price tier). Its image
shows the category's shape in its colour, pattern and size; its text fields state the same
attributes, with noise recorded in `noise.csv`: a missing brand, an empty description, and a
*misleading* description copied from another item of a different colour and category (titles
and category paths can lie the same way: off by default, on in `worlds/misleading-views.yaml`).
Users prefer colours and patterns (seen in images) and categories, brands and price tiers (read
in text), so both modalities carry signal. `corpus/` holds NEW items of the same world with clean
text, for training a CLIP that learns which words match which pictures; at feature time a
misleading description then aligns worse with its image than a clean one.

By default every item is on sale all year and each user's interactions fall uniformly over it.
`item_arrivals` makes the shop unfold in time instead (`worlds/longtail.yaml` is such a shop):
a share `items_at_start` of the items is on sale from the start, the rest launch uniformly over
the year (`launch_timestamp` in `attributes.csv`). Each user is active over a window of their own
(exponential length, mean `user_active_days`); each interaction's time is drawn first, within that
window, and its item then among the items launched by then, by taste x popularity x a boost for
recent launches that decays with the item's age (`new_item_boost`, `new_item_days`), so no
interaction precedes its item's launch and new items sell best while new. With
`interactions_exponent` a user's number of interactions n is drawn with P(n) ~ n^-exponent, so most
users buy a few things and few buy many. Every such knob draws from a random stream of its own:
with the knobs off, the world is the one generated before they existed, byte for byte.
"""

import io
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageDraw
from pydantic import Field, model_validator
from tqdm import tqdm

from cliper.views import load_views
from offline.config import StrictModel
from offline.data.catalog import INTERACTIONS_FILE, ITEMS_FILE, VIEWS_FILE

# (categories field, noun, shape) per category; brands are tied to categories.
CATEGORIES = [
    ("Kitchen|Mugs", "mug", "mug"),
    ("Clothing|T-Shirts", "t-shirt", "shirt"),
    ("Sports|Balls", "ball", "ball"),
    ("Office|Notebooks", "notebook", "book"),
    ("Home|Lamps", "lamp", "lamp"),
    ("Garden|Flower Pots", "flower pot", "pot"),
    ("Toys|Building Blocks", "block set", "blocks"),
    ("Accessories|Bags", "bag", "bag"),
]
COLOURS = {
    "red": (210, 35, 35),
    "orange": (240, 135, 25),
    "yellow": (235, 215, 40),
    "green": (45, 160, 60),
    "blue": (35, 75, 215),
    "purple": (130, 55, 185),
    "pink": (240, 125, 185),
    "brown": (120, 75, 40),
}
# pattern -> (title adjective, description phrase)
PATTERNS = {
    "plain": ("", "a solid colour finish"),
    "striped": ("striped", "a striped pattern"),
    "dotted": ("polka-dot", "a polka-dot pattern"),
    "checked": ("checked", "a checked pattern"),
    "zigzag": ("zigzag", "a zigzag pattern"),
}
SIZES = {"small": 0.55, "medium": 0.72, "large": 0.9}  # share of the canvas the object spans
TIERS = {
    "budget": "An affordable everyday choice.",
    "standard": "Good value for the price.",
    "premium": "A premium piece made from high-end materials.",
}
BRANDS = [
    "Acme",
    "Borealis",
    "Cobalt",
    "Dunmore",
    "Elmwood",
    "Fjord",
    "Granite",
    "Halcyon",
    "Ironleaf",
    "Juniper",
    "Kestrel",
    "Lumen",
    "Meridian",
    "Northwind",
    "Oakridge",
    "Pinnacle",
    "Quartz",
    "Redfern",
    "Solstice",
    "Tidewater",
    "Umber",
    "Vantage",
    "Willow",
    "Xenith",
    "Yarrow",
    "Zephyr",
    "Alder",
    "Brightline",
    "Cascade",
    "Driftwood",
]  # brand b belongs to category b % len(CATEGORIES)
FILLERS = [
    "Ships in recyclable packaging.",
    "A thoughtful gift idea.",
    "Easy to clean.",
    "Backed by a two-year warranty.",
    "Designed to last.",
    "Loved by our customers.",
]
COLOUR_NAMES = list(COLOURS)
PATTERN_NAMES = list(PATTERNS)
SIZE_NAMES = list(SIZES)
TIER_NAMES = list(TIERS)
ATTRIBUTES = ("category", "colour", "pattern", "size", "brand", "tier")
TEXT_COLUMNS = ["title", "brand", "categories", "description"]
USER_BLOCK = 512
DAY = 86_400  # seconds
YEAR = 365 * DAY  # the span of the world's interactions
EPOCH = 1_600_000_000  # unix time of the world's start
# Streams added after the first worlds are seeded [cfg.seed, stream], apart from the SeedSequence
# spawns and the image seeds (1, 2), so that turning a knob on changes no other draw.
LAUNCH_STREAM, COUNT_STREAM, TIME_STREAM = 3, 4, 5
Attributes = Mapping[str, int]  # one item's latent attributes, as indices into the vocabularies
MISLEADABLE = ("title", "categories", "description")  # fields that can be copied from elsewhere
NOISE_FLAGS = [
    "brand_missing",
    "title_colour_omitted",
    "description_empty",
    *(f"{field}_misleading" for field in MISLEADABLE),
]


class SynthConfig(StrictModel):
    """Size of the world and the shares of planted noise."""

    items: int = Field(2000, ge=10)
    users: int = Field(1000, ge=1)
    seed: int = 0
    corpus_items: int = Field(1500, ge=0)
    image_size: int = Field(96, ge=32)
    min_interactions: int = Field(20, ge=1)
    max_interactions: int = Field(60, ge=1)
    popularity_exponent: float = 1.0  # Zipf exponent of the item popularity prior
    brand_missing: float = Field(0.2, ge=0, le=1)
    description_empty: float = Field(0.15, ge=0, le=1)
    description_misleading: float = Field(0.2, ge=0, le=1)
    # off by default: the default world is the one earlier benchmarks were measured on
    title_misleading: float = Field(0.0, ge=0, le=1)
    categories_misleading: float = Field(0.0, ge=0, le=1)
    title_colour_omitted: float = Field(0.2, ge=0, le=1)
    broken_images: float = Field(0.005, ge=0, le=1)  # truncated JPEGs, to exercise the loader
    # P(a user has n interactions) ~ n^-exponent over [min, max]; 0 is uniform
    interactions_exponent: float = Field(0.0, ge=0)
    # a shop that unfolds in time (see the module docstring); off by default
    item_arrivals: bool = False
    items_at_start: float = Field(0.3, ge=0, le=1)  # share of the items on sale from the start
    new_item_boost: float = Field(1.0, ge=0)  # added to the log-score of a just-launched item
    new_item_days: float = Field(30.0, gt=0)  # the boost decays as exp(-age / new_item_days)
    user_active_days: float = Field(60.0, gt=0)  # mean length of a user's active window

    @model_validator(mode="after")
    def _interaction_range(self) -> "SynthConfig":
        if self.min_interactions > self.max_interactions:
            raise ValueError(
                f"min_interactions ({self.min_interactions}) exceeds "
                f"max_interactions ({self.max_interactions})"
            )
        if self.item_arrivals and items_at_start(self) < self.max_interactions:
            raise ValueError(
                f"items_at_start x items ({items_at_start(self)}) is below max_interactions "
                f"({self.max_interactions}): a user active at the start could not make every pick"
            )
        return self


def items_at_start(cfg: SynthConfig) -> int:
    """How many items are on sale from the start when items arrive over time."""
    return round(cfg.items_at_start * cfg.items)


@dataclass
class SynthReport:
    out: Path
    items: int
    users: int
    interactions: int
    corpus_items: int
    noise: dict[str, int]
    seconds: float

    def __str__(self) -> str:
        noise = ", ".join(f"{name} {count}" for name, count in self.noise.items())
        return (
            f"synthetic world in {self.out} ({self.seconds:.1f} s): {self.items} items, "
            f"{self.users} users, {self.interactions} interactions; corpus/ {self.corpus_items} "
            f"items with clean captions\nplanted noise: {noise}"
        )


def sample_attributes(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Latent attributes of n items: category first, then a brand of that category."""
    category = rng.integers(len(CATEGORIES), size=n)
    brands_of = [np.arange(c, len(BRANDS), len(CATEGORIES)) for c in range(len(CATEGORIES))]
    brand = np.array([rng.choice(brands_of[c]) for c in category], dtype=np.int64)
    brand_tier = np.arange(len(BRANDS)) % len(TIERS)  # each brand leans to one price tier
    tier = np.where(rng.random(n) < 0.7, brand_tier[brand], rng.integers(len(TIERS), size=n))
    return pd.DataFrame(
        {
            "category": category,
            "colour": rng.integers(len(COLOURS), size=n),
            "pattern": rng.integers(len(PATTERNS), size=n),
            "size": rng.integers(len(SIZES), size=n),
            "brand": brand,
            "tier": tier,
        }
    )


def describe(attrs: Attributes, rng: np.random.Generator) -> str:
    """A clean product description stating the item's attributes."""
    noun = CATEGORIES[attrs["category"]][1]
    colour, size = COLOUR_NAMES[attrs["colour"]], SIZE_NAMES[attrs["size"]]
    pattern = PATTERNS[PATTERN_NAMES[attrs["pattern"]]][1]
    brand = BRANDS[attrs["brand"]]
    opening = [
        f"A {size} {colour} {noun} with {pattern}.",
        f"This {colour} {noun} from {brand} comes in {pattern} and a {size} size.",
        f"{brand} presents a {size} {noun} in {colour}, with {pattern}.",
    ][rng.integers(3)]
    fillers = rng.choice(FILLERS, size=rng.integers(3), replace=False)
    return " ".join([opening, TIERS[TIER_NAMES[attrs["tier"]]], *fillers])


def title(attrs: Attributes, rng: np.random.Generator, with_colour: bool) -> str:
    noun = CATEGORIES[attrs["category"]][1]
    adjective = PATTERNS[PATTERN_NAMES[attrs["pattern"]]][0]
    colour = COLOUR_NAMES[attrs["colour"]] if with_colour else ""
    words = " ".join(word for word in (colour, adjective, noun) if word)
    brand = BRANDS[attrs["brand"]]
    text = [f"{words} by {brand}", f"{brand} {words}", f"{SIZE_NAMES[attrs['size']]} {words}"][
        rng.integers(3)
    ]
    return text[0].upper() + text[1:]


def plant_noise(
    attrs: pd.DataFrame, rng: np.random.Generator, cfg: SynthConfig, lies_rng: np.random.Generator
) -> pd.DataFrame:
    """Per item: which noise it gets, and for each misleading field the item it is copied from.

    Misleading titles and categories are drawn from `lies_rng`, so a world without them has the
    same items, text and interactions, byte for byte, as one generated before they existed.
    """
    n = len(attrs)
    draw = rng.random(n)  # empty and misleading descriptions exclude each other
    noise = pd.DataFrame(
        {
            "brand_missing": rng.random(n) < cfg.brand_missing,
            "title_colour_omitted": rng.random(n) < cfg.title_colour_omitted,
            "description_empty": draw < cfg.description_empty,
            "description_misleading": (draw >= cfg.description_empty)
            & (draw < cfg.description_empty + cfg.description_misleading),
        }
    )
    noise["description_source"] = _sources(attrs, noise["description_misleading"], rng)
    for field in ("title", "categories"):
        share = getattr(cfg, f"{field}_misleading")
        noise[f"{field}_misleading"] = lies_rng.random(n) < share if share else False
        noise[f"{field}_source"] = _sources(attrs, noise[f"{field}_misleading"], lies_rng)
    return noise


def _sources(attrs: pd.DataFrame, misleading: pd.Series, rng: np.random.Generator) -> list[int]:
    """The item each misleading field is copied from, -1 where the field is the item's own."""
    return [_other_item(attrs, i, rng) if lie else -1 for i, lie in enumerate(misleading)]


def text_fields(
    attrs: pd.DataFrame, rng: np.random.Generator, noise: pd.DataFrame | None = None
) -> pd.DataFrame:
    """title, brand, categories, description per item; clean unless `noise` is given."""
    if noise is None:
        noise = pd.DataFrame({flag: False for flag in NOISE_FLAGS}, index=attrs.index)
        for field in MISLEADABLE:
            noise[f"{field}_source"] = -1
    records = attrs.to_dict("records")
    clean = {
        "description": [describe(row, rng) for row in records],
        "title": [
            title(row, rng, with_colour=not omitted)
            for row, omitted in zip(records, noise["title_colour_omitted"])
        ],
        "categories": [CATEGORIES[row["category"]][0] for row in records],
    }
    fields = {
        field: [
            clean[field][source if lie else index]
            for index, (lie, source) in enumerate(
                zip(noise[f"{field}_misleading"], noise[f"{field}_source"])
            )
        ]
        for field in MISLEADABLE
    }
    fields["brand"] = [
        "" if missing else BRANDS[row["brand"]]
        for row, missing in zip(records, noise["brand_missing"])
    ]
    fields["description"] = [
        "" if empty else text for text, empty in zip(fields["description"], noise["description_empty"])
    ]
    return pd.DataFrame(fields, columns=TEXT_COLUMNS)


def _other_item(attrs: pd.DataFrame, i: int, rng: np.random.Generator) -> int:
    """A random item of a different colour and category (the source of a misleading text)."""
    candidates = np.flatnonzero(
        (attrs["colour"].to_numpy() != attrs.at[i, "colour"])
        & (attrs["category"].to_numpy() != attrs.at[i, "category"])
    )
    return int(rng.choice(candidates))


def render(attrs: Attributes, size: int, rng: np.random.Generator) -> Image.Image:
    """The item's picture: its category's shape, filled with its colour and pattern."""
    base = np.clip(
        np.array(COLOURS[COLOUR_NAMES[attrs["colour"]]]) + rng.integers(-18, 19, 3), 0, 255
    )
    ink = (250, 250, 250) if base @ [0.299, 0.587, 0.114] < 150 else (45, 45, 45)
    fill = Image.new("RGB", (size, size), tuple(int(v) for v in base))
    _draw_pattern(ImageDraw.Draw(fill), PATTERN_NAMES[attrs["pattern"]], size, ink, rng)
    span = SIZES[SIZE_NAMES[attrs["size"]]] * rng.uniform(0.9, 1.05) * size
    offset = (size - span) / 2 + rng.uniform(-0.06, 0.06, 2) * size
    mask = Image.new("L", (size, size), 0)
    _draw_shape(ImageDraw.Draw(mask), CATEGORIES[attrs["category"]][2], offset, span)
    layer = fill.convert("RGBA")
    layer.putalpha(mask)
    layer = layer.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BILINEAR)
    background = tuple(int(v) for v in rng.integers(225, 256, 3)) + (255,)
    canvas = Image.new("RGBA", (size, size), background)
    canvas.alpha_composite(layer)
    return canvas.convert("RGB")


def _draw_pattern(
    draw: ImageDraw.ImageDraw, pattern: str, size: int, ink: tuple, rng: np.random.Generator
) -> None:
    period = max(4, size // 8)
    phase = int(rng.integers(period))
    starts = range(-period + phase, size + period, period)
    if pattern == "striped":
        for y in starts:
            draw.rectangle([0, y, size, y + period // 2 - 1], fill=ink)
    elif pattern == "dotted":
        radius = period // 4 + 1
        for row, y in enumerate(starts):
            for x in starts:
                cx = x + (period // 2 if row % 2 else 0)
                draw.ellipse([cx - radius, y - radius, cx + radius, y + radius], fill=ink)
    elif pattern == "checked":
        for row, y in enumerate(starts):
            for column, x in enumerate(starts):
                if (row + column) % 2:
                    draw.rectangle([x, y, x + period - 1, y + period - 1], fill=ink)
    elif pattern == "zigzag":
        half = period // 2
        for y in starts:
            points = [
                (x, y + (half if k % 2 else 0))
                for k, x in enumerate(range(-period, size + period, half))
            ]
            draw.line(points, fill=ink, width=max(2, size // 32))


# shapes in a unit box: ("poly", points) / ("rect"|"ellipse", box), value 255 draws, 0 cuts
SHAPES: dict[str, list[tuple[str, object, int]]] = {
    "mug": [
        ("ellipse", (0.55, 0.3, 0.92, 0.72), 255),
        ("ellipse", (0.65, 0.42, 0.82, 0.6), 0),
        ("rect", (0.12, 0.15, 0.7, 0.92), 255),
    ],
    "shirt": [
        (
            "poly",
            [
                (0.3, 0.08),
                (0.7, 0.08),
                (0.97, 0.32),
                (0.84, 0.46),
                (0.74, 0.38),
                (0.74, 0.95),
                (0.26, 0.95),
                (0.26, 0.38),
                (0.16, 0.46),
                (0.03, 0.32),
            ],
            255,
        ),
        ("ellipse", (0.4, 0.0, 0.6, 0.18), 0),
    ],
    "ball": [("ellipse", (0.05, 0.05, 0.95, 0.95), 255)],
    "book": [("rect", (0.18, 0.04, 0.82, 0.96), 255)]
    + [("ellipse", (0.2, y, 0.28, y + 0.06), 0) for y in (0.15, 0.35, 0.55, 0.75)],
    "lamp": [
        ("poly", [(0.3, 0.05), (0.7, 0.05), (0.88, 0.48), (0.12, 0.48)], 255),
        ("rect", (0.45, 0.48, 0.55, 0.86), 255),
        ("ellipse", (0.22, 0.8, 0.78, 0.97), 255),
    ],
    "pot": [
        ("poly", [(0.15, 0.3), (0.85, 0.3), (0.7, 0.95), (0.3, 0.95)], 255),
        ("rect", (0.08, 0.2, 0.92, 0.34), 255),
    ],
    "blocks": [
        ("rect", (0.05, 0.55, 0.47, 0.95), 255),
        ("rect", (0.53, 0.55, 0.95, 0.95), 255),
        ("rect", (0.29, 0.1, 0.71, 0.5), 255),
    ],
    "bag": [
        ("ellipse", (0.28, 0.05, 0.72, 0.6), 255),
        ("ellipse", (0.36, 0.13, 0.64, 0.5), 0),
        ("rect", (0.1, 0.35, 0.9, 0.95), 255),
    ],
}


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, offset: np.ndarray, span: float) -> None:
    def point(x: float, y: float) -> tuple[float, float]:
        return (offset[0] + x * span, offset[1] + y * span)

    for kind, geometry, value in SHAPES[shape]:
        if kind == "poly":
            draw.polygon([point(x, y) for x, y in geometry], fill=value)  # type: ignore[union-attr]
        else:
            x0, y0, x1, y1 = geometry  # type: ignore[misc]
            box = [*point(x0, y0), *point(x1, y1)]
            (draw.rectangle if kind == "rect" else draw.ellipse)(box, fill=value)


def interactions(
    attrs: pd.DataFrame,
    cfg: SynthConfig,
    rng: np.random.Generator,
    launch: np.ndarray | None = None,
) -> pd.DataFrame:
    """Users with latent tastes pick items by taste x Zipf popularity (Gumbel top-k sampling).

    Tastes: a Dirichlet over colours, patterns, categories and price tiers, and a normal
    affinity per brand; the higher an item's score among a user's picks, the higher the rating.
    With `launch` (seconds from the start at which each item goes on sale; see `launch_times`)
    each pick is made at a time of the user's active window, among the items launched by then.
    """
    n_items = len(attrs)
    popularity = -cfg.popularity_exponent * np.log1p(rng.permutation(n_items))
    tastes = [
        (
            attrs[attribute].to_numpy(),
            np.log(rng.dirichlet(np.full(values, alpha), cfg.users) + 0.02),
        )
        for attribute, values, alpha in [
            ("colour", len(COLOURS), 0.4),
            ("pattern", len(PATTERNS), 0.5),
            ("category", len(CATEGORIES), 0.4),
            ("tier", len(TIERS), 1.0),
        ]
    ]
    tastes.append((attrs["brand"].to_numpy(), rng.normal(0, 1, (cfg.users, len(BRANDS)))))
    counts = interaction_counts(cfg, n_items, rng)
    time_rng = np.random.default_rng([cfg.seed, TIME_STREAM])
    items, ratings, times = [], [], []
    for start in range(0, cfg.users, USER_BLOCK):  # blocks keep memory at USER_BLOCK x n_items
        block = slice(start, start + USER_BLOCK)
        score = popularity + sum(taste[block][:, codes] for codes, taste in tastes)
        if launch is None:
            chosen = _pick_any_time(score, counts[block], rng)
        else:
            chosen, when = _pick_over_time(score, counts[block], launch, cfg, time_rng)
            times.extend(when)
        items.extend(chosen)
        ratings.extend(_ratings(score[row, picks]) for row, picks in enumerate(chosen))
    if launch is None:
        times = [np.sort(rng.integers(0, YEAR, count)) for count in counts]
    return pd.DataFrame(
        {
            "user_id": np.repeat([f"u{user:05d}" for user in range(cfg.users)], counts),
            "item_id": [f"i{index:05d}" for index in np.concatenate(items)],
            "rating": np.concatenate(ratings),
            "timestamp": EPOCH + np.concatenate(times),
        }
    )


def interaction_counts(cfg: SynthConfig, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Interactions per user in [min, max]: uniform (from `rng`), or ~ n^-interactions_exponent."""
    high = min(cfg.max_interactions, n_items)
    low = min(cfg.min_interactions, high)
    if not cfg.interactions_exponent:
        return rng.integers(low, high + 1, size=cfg.users)
    sizes = np.arange(low, high + 1)
    weights = sizes ** -cfg.interactions_exponent
    count_rng = np.random.default_rng([cfg.seed, COUNT_STREAM])
    return count_rng.choice(sizes, size=cfg.users, p=weights / weights.sum())


def launch_times(cfg: SynthConfig) -> np.ndarray:
    """Seconds from the start at which each item goes on sale: `items_at_start` of them at 0,
    the others uniformly over the year."""
    rng = np.random.default_rng([cfg.seed, LAUNCH_STREAM])
    launch = rng.integers(1, YEAR, size=cfg.items)
    launch[rng.permutation(cfg.items)[: items_at_start(cfg)]] = 0
    return launch


def _pick_any_time(
    score: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """Each user's items, in random order, all at once (their times are drawn afterwards)."""
    keys = score + rng.gumbel(size=score.shape)
    return [
        rng.permutation(np.argpartition(-keys[row], count - 1)[:count])
        for row, count in enumerate(counts)
    ]


def _pick_over_time(
    score: np.ndarray,
    counts: np.ndarray,
    launch: np.ndarray,
    cfg: SynthConfig,
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each user's items and times: the j-th time of every user's window first, then, for all
    users at once, an item among those launched by then and not yet picked (Gumbel-max of
    score + recency boost)."""
    times = _active_times(len(score), counts.max(), cfg, rng)
    taken = np.zeros(score.shape, bool)
    picks = np.zeros(times.shape, np.int64)
    for j in range(times.shape[1]):
        live = np.flatnonzero(counts > j)  # the users with a j-th pick
        age = (times[live, j, None] - launch) / DAY
        boost = cfg.new_item_boost * np.exp(-np.maximum(age, 0) / cfg.new_item_days)
        keys = score[live] + boost + rng.gumbel(size=age.shape)
        keys[(age < 0) | taken[live]] = -np.inf
        picks[live, j] = keys.argmax(axis=1)
        taken[live, picks[live, j]] = True
    return (
        [picks[row, :count] for row, count in enumerate(counts)],
        [times[row, :count] for row, count in enumerate(counts)],
    )


def _active_times(users: int, picks: int, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Sorted pick times (seconds from the start) in each user's active window: an exponential
    length of mean `user_active_days`, placed uniformly within the year."""
    length = np.minimum(rng.exponential(cfg.user_active_days * DAY, users), YEAR - 1)
    start = rng.uniform(0, YEAR - length)
    offsets = rng.random((users, picks)) * length[:, None]
    return np.sort((start[:, None] + offsets).astype(np.int64), axis=1)


def _ratings(scores: np.ndarray) -> np.ndarray:
    """1-5 stars by the rank of each pick's score among the user's picks (best = 5)."""
    rank = np.argsort(np.argsort(-scores)) / len(scores)
    return 5 - np.digitize(rank, [0.35, 0.7, 0.9, 0.97])


def _write_images(
    folder: Path,
    ids: list[str],
    attrs: pd.DataFrame,
    cfg: SynthConfig,
    seed: list[int],
    broken: np.ndarray,
    desc: str,
) -> list[str]:
    """Render one JPEG per item (a truncated one where `broken`); returns relative paths."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    records = attrs.to_dict("records")
    for index, item_id in enumerate(tqdm(ids, desc=desc, unit="img", leave=False)):
        image = render(records[index], cfg.image_size, np.random.default_rng([*seed, index]))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=92)
        data = buffer.getvalue()
        relative = f"images/{item_id}.jpg"
        (folder / relative).write_bytes(data[: len(data) // 3] if broken[index] else data)
        paths.append(relative)
    return paths


def generate(out: Path, cfg: SynthConfig) -> SynthReport:
    """Write the synthetic world to `out` (see the module docstring for the files)."""
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # spawn(4)[:3] equals spawn(3): the fourth stream (lies) leaves the other three unchanged
    items_rng, users_rng, corpus_rng, lies_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(4)
    )
    attrs = sample_attributes(items_rng, cfg.items)
    launch = launch_times(cfg) if cfg.item_arrivals else None
    noise = _write_catalog(out, attrs, cfg, items_rng, lies_rng, launch)
    inter = interactions(attrs, cfg, users_rng, launch)
    inter.to_csv(out / INTERACTIONS_FILE, index=False)
    _write_corpus(out / "corpus", cfg, corpus_rng)
    return SynthReport(
        out=out,
        items=cfg.items,
        users=cfg.users,
        interactions=len(inter),
        corpus_items=cfg.corpus_items,
        noise={flag: int(noise[flag].sum()) for flag in [*NOISE_FLAGS, "image_broken"]},
        seconds=time.perf_counter() - start,
    )


def _write_catalog(
    out: Path,
    attrs: pd.DataFrame,
    cfg: SynthConfig,
    rng: np.random.Generator,
    lies_rng: np.random.Generator,
    launch: np.ndarray | None,
) -> pd.DataFrame:
    """items.csv, images/, catalog.yaml, noise.csv, attributes.csv (with `launch_timestamp`
    when items arrive over time); returns the noise table."""
    ids = [f"i{index:05d}" for index in range(cfg.items)]
    noise = plant_noise(attrs, rng, cfg, lies_rng)
    items = text_fields(attrs, rng, noise)
    noise["image_broken"] = rng.random(cfg.items) < cfg.broken_images
    items.insert(0, "item_id", ids)
    items["image_path"] = _write_images(
        out, ids, attrs, cfg, [cfg.seed, 1], noise["image_broken"].to_numpy(), "catalog images"
    )
    items.to_csv(out / ITEMS_FILE, index=False)
    views = load_views("products").model_dump()
    views["name"] = "synthetic-shop"
    (out / VIEWS_FILE).write_text(yaml.safe_dump(views, sort_keys=False), encoding="utf-8")
    for field in MISLEADABLE:
        noise[f"{field}_source"] = [ids[s] if s >= 0 else "" for s in noise[f"{field}_source"]]
    noise.insert(0, "item_id", ids)
    noise.to_csv(out / "noise.csv", index=False)
    attributes = _attribute_names(attrs, ids)
    if launch is not None:
        attributes["launch_timestamp"] = EPOCH + launch
    attributes.to_csv(out / "attributes.csv", index=False)
    return noise


def _write_corpus(folder: Path, cfg: SynthConfig, rng: np.random.Generator) -> None:
    """NEW items of the same world (ids c00000...), clean text, for training CLIP."""
    attrs = sample_attributes(rng, cfg.corpus_items)
    ids = [f"c{index:05d}" for index in range(cfg.corpus_items)]
    captions = text_fields(attrs, rng)
    captions.insert(0, "item_id", ids)
    captions["image_path"] = _write_images(
        folder, ids, attrs, cfg, [cfg.seed, 2], np.zeros(cfg.corpus_items, bool), "corpus images"
    )
    captions.to_csv(folder / "captions.csv", index=False)
    _attribute_names(attrs, ids).to_csv(folder / "attributes.csv", index=False)


def _attribute_names(attrs: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    """The latent attributes as words (for analysis, e.g. zero-shot colour accuracy)."""
    vocab = {
        "category": [path for path, _, _ in CATEGORIES],
        "colour": COLOUR_NAMES,
        "pattern": PATTERN_NAMES,
        "size": SIZE_NAMES,
        "brand": BRANDS,
        "tier": TIER_NAMES,
    }
    named = pd.DataFrame({name: [vocab[name][v] for v in attrs[name]] for name in ATTRIBUTES})
    named.insert(0, "item_id", ids)
    return named
