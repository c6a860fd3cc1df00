"""Request and response bodies (pydantic), shared by the routers and the OpenAPI docs."""

import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from service.popularity import MAX_K
from service.search import DEFAULT_USER_WEIGHT

MAX_ID_CHARS = 256
MAX_INTERACTIONS = 1000


def check_id(value: str) -> str:
    """An item or user id: 1..256 characters, no control characters, no surrounding spaces."""
    if not value.strip():
        raise ValueError("an id must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise ValueError(f"an id must be at most {MAX_ID_CHARS} characters, got {len(value)}")
    if value != value.strip():
        raise ValueError("an id must not start or end with whitespace")
    control = sorted({f"U+{ord(c):04X}" for c in value if unicodedata.category(c) in ("Cc", "Cs")})
    if control:
        raise ValueError(f"an id must not contain control characters, found {control}")
    return value


Id = Annotated[str, AfterValidator(check_id)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemFields(_Body):
    """An item's id and text fields (the multipart form's non-file part)."""

    item_id: Id
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="text fields by column name (the bundle's view columns, e.g. title, brand, "
        "categories, description); leave out a field that has no value",
        examples=[{"title": "Ceramic espresso cup", "brand": "Acme", "categories": "Kitchen|Cups"}],
    )


class ItemIn(ItemFields):
    """A product to ingest (JSON); with multipart/form-data send `item_id` and each text field as
    form fields and the image as the file field `image`."""

    image_base64: str | None = Field(None, description="the image file (JPEG, PNG, WebP), base64-encoded")
    image_url: str | None = Field(None, description="an image URL; only when the service allow-lists it")

    @model_validator(mode="after")
    def _one_image(self) -> "ItemIn":
        if (self.image_base64 is None) == (self.image_url is None):
            raise ValueError(
                "send exactly one of image_base64 or image_url (or upload a file with multipart/form-data)"
            )
        return self


class ItemCreated(BaseModel):
    item_id: str
    index_size: int
    bundle_version: str
    replaced: bool


class ItemOut(BaseModel):
    item_id: str
    source: Literal["bundle", "ingested"]
    fields: dict[str, str] = Field(description="the item's text fields (a bundle item's as exported)")
    view_weights: dict[str, float] = Field(description="each text view's weight in the item's fused text (sum 1)")
    created_at: datetime | None
    bundle_version: str
    vector: list[float] | None = Field(None, description="the item vector, with ?include_vector=true")


class ItemDeleted(BaseModel):
    item_id: str
    index_size: int
    bundle_version: str


class Contribution(BaseModel):
    item_id: str
    score: float = Field(description="inner product of this history item's vector with the explained item's")


class Explanation(BaseModel):
    """Why an item is in the answer (with ?explain=true)."""

    because: list[Contribution] | None = Field(
        None, description="recommendations: the user's items that contributed most (by inner product)")
    view_weights: dict[str, float] = Field(description="each text view's weight in the item's fused text (sum 1)")
    summary: str = Field(description="the view weights in words, e.g. the image agrees with the title, not the brand")


class ScoredItem(BaseModel):
    item_id: str
    score: float
    explanation: Explanation | None = None


class Recommendations(BaseModel):
    user_id: str
    items: list[ScoredItem]
    bundle_version: str
    from_cache: bool = Field(description="the user vector came from the cache")
    fallback: bool = Field(description="unknown user: items ranked by popularity, not by the model")


class SimilarItems(BaseModel):
    item_id: str
    items: list[ScoredItem]
    bundle_version: str


class SearchIn(_Body):
    """A search: a text, an image, or both (their CLIP embeddings averaged)."""

    text: str | None = Field(None, min_length=1, description="what to look for, in words")
    image_base64: str | None = Field(None, description="an image to look for, base64-encoded")
    k: int = Field(20, ge=1, le=MAX_K)
    filters: list[str] = Field([], description="field:value filters, ANDed (see GET recommendations)")
    exclude: list[Id] = Field([], description="item ids to leave out")
    user_id: Id | None = Field(None, description="blend in this user's model score (see the README)")
    user_weight: float = Field(DEFAULT_USER_WEIGHT, ge=0, le=1, description="the user score's share of the blend")

    @model_validator(mode="after")
    def _a_query(self) -> "SearchIn":
        if self.text is None and self.image_base64 is None:
            raise ValueError("send a text, an image_base64, or both")
        return self


class SearchHit(BaseModel):
    item_id: str
    score: float = Field(description="what the items are ranked by: clip_score, or the blend with user_score")
    clip_score: float = Field(description="mean cosine of the query with the item's image and fused text")
    user_score: float | None = Field(None, description="the user's model score (inner product), with user_id")


class SearchResults(BaseModel):
    items: list[SearchHit]
    personalized: bool = Field(description="the user's score was blended in (a user_id with a vector)")
    bundle_version: str


class UserOut(BaseModel):
    user_id: str
    known: bool = Field(description="the user has a vector (from the bundle or folded in)")
    history: list[str] = Field(description="the user's items, oldest first (the last 100 at most)")
    interactions: int = Field(description="how many items the user has interacted with")


class UserList(BaseModel):
    users: list[str]


class BundleInfo(BaseModel):
    bundle_version: str
    views: list[str]
    fields: list[str] = Field(description="the text fields an item may have (what filters take)")
    list_fields: dict[str, str] = Field(description="fields holding lists, with their separator")
    items: int = Field(description="live items")
    thumbnails: bool
    fusion: str


class InteractionsIn(_Body):
    item_ids: list[Id] = Field(min_length=1, max_length=MAX_INTERACTIONS)


class InteractionsRecorded(BaseModel):
    user_id: str
    recorded: int = Field(description="items recorded (an item named twice in one call counts once)")
    interactions_since_bundle: int
    bundle_version: str


class Health(BaseModel):
    status: Literal["alive", "ready", "degraded", "not ready"] = Field(
        description="`degraded`: ready, but a part that only speeds requests up (the cache) is down"
    )
    checks: dict[str, str] = {}


class FieldError(BaseModel):
    """One invalid part of a request."""

    loc: list[str | int] = Field(description='where it is, e.g. ["query", "k"] or ["body", "item_ids", 0]')
    msg: str = Field(description="what is wrong with it")
    type: str = Field(description="pydantic's error type, e.g. missing, greater_than_equal")


class Error(BaseModel):
    """The body of every error the service answers (4xx): what is wrong and what to change."""

    model_config = ConfigDict(extra="forbid")

    detail: str = Field(description="what is wrong and what to change")
    errors: list[FieldError] | None = Field(
        None, description="422 for a request that does not match this document: each invalid part"
    )
    unknown_item_ids: list[str] | None = Field(
        None, description="422 for interactions with items the catalog does not hold: their ids"
    )
