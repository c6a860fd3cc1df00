"""POST /items (JSON or multipart), GET /items/{item_id} (and its /similar and /image), DELETE /items/{item_id}.

Item ids may contain slashes, so the routes with a suffix (`/similar`, `/image`) are declared
before the plain one: an item whose own id ends in "/similar" or "/image" cannot be read by it.
"""

import base64
import binascii
import hashlib
import io
from collections.abc import Mapping
from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ValidationError

from service.api.deps import ApiKey, HowMany, SelectionDep, ServicesDep
from service.api.idempotency import IdempotencyKey, as_response, idempotent, replay
from service.api.multipart import parse_multipart
from service.api.responses import errors
from service.api.schemas import Id, ItemCreated, ItemDeleted, ItemFields, ItemIn, ItemOut, ScoredItem, SimilarItems
from service.errors import BadInput, UnsupportedMediaType
from service.fetch import fetch_image
from service.recommend import view_explanation
from service.state import Services

router = APIRouter(prefix="/items", tags=["items"])
Body = TypeVar("Body", bound=BaseModel)

IMAGE_FORM_FIELD = "image"
MAX_FORM_PARTS = 64
_RESERVED_FORM_FIELDS = {"item_id", IMAGE_FORM_FIELD}
_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ItemIn.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["item_id", IMAGE_FORM_FIELD],
                    "properties": {
                        "item_id": {"type": "string"},
                        IMAGE_FORM_FIELD: {"type": "string", "format": "binary"},
                    },
                    "additionalProperties": {"type": "string", "description": "a text field, e.g. title"},
                }
            },
        },
    }
}


@router.post("", status_code=201, response_model=ItemCreated, dependencies=[ApiKey], openapi_extra=_OPENAPI_BODY,
             responses=errors(401, 409, 415, 422))
async def create_item(
    request: Request,
    services: ServicesDep,
    key: IdempotencyKey,
    replace: Annotated[bool, Query(description="replace an existing item with this id")] = False,
) -> Response:
    """Ingest a product: encode its image and text views, persist it, make it a candidate at once."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    image_url = None
    if content_type == "application/json":
        body = await json_body(request, ItemIn)
        _check_fields(body.fields, services)
        item_id, fields, image_url = body.item_id, body.fields, body.image_url
        image = None if image_url is not None else base64_image(body.image_base64 or "")
    elif content_type == "multipart/form-data":
        item_id, fields, image = await _from_form(request)
        _check_fields(fields, services)
    else:
        raise UnsupportedMediaType(
            f"send application/json or multipart/form-data, not {content_type or 'no Content-Type'}"
        )
    # the parsed request, not its bytes: JSON or multipart, any boundary, the same item is the same request
    picture = {"image_url": image_url} if image is None else {"image_sha256": hashlib.sha256(image).hexdigest()}
    once = idempotent(key, "POST", "/items", {"item_id": item_id, "fields": fields, "replace": replace, **picture})
    if (replayed := await replay(services, once)) is not None:
        return replayed
    if image is None:
        settings = services.settings
        image = await fetch_image(image_url, settings.image_url_allow_list, settings.max_body_bytes,
                                  settings.image_url_timeout_s)
    return as_response(await services.items.ingest(item_id, fields, image, replace, once))


@router.get("/{item_id:path}/similar", response_model=SimilarItems, responses=errors(404, 422))
async def similar_items(
    item_id: Annotated[Id, Path()],
    services: ServicesDep,
    selection: SelectionDep,
    k: HowMany = 20,
    explain: Annotated[bool, Query(description="add each item's view weights and their summary")] = False,
) -> SimilarItems:
    """The k items whose vectors are nearest this item's (inner product), itself left out; an
    item ingested a second ago is found by its content vector. Filters as for recommendations."""
    hits = await services.search.similar(item_id, k, selection)
    fusion = services.bundle.manifest.fusion
    return SimilarItems(item_id=item_id, bundle_version=services.bundle_version, items=[
        ScoredItem(item_id=hit.item_id, score=hit.score,
                   explanation=view_explanation(services.catalog, fusion, hit.row) if explain else None)
        for hit in hits
    ])


@router.get("/{item_id:path}/image", response_class=Response, responses={
    200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}, "description": "the image"},
    **errors(404, 422)})
async def item_image(item_id: Annotated[Id, Path()], services: ServicesDep) -> Response:
    """The stored image of an ingested item; a bundle item's thumbnail (a small JPEG)."""
    image = await services.items.image(item_id)
    return Response(image, media_type=_media_type(image), headers={"Cache-Control": "max-age=60"})


@router.get("/{item_id:path}", response_model=ItemOut, responses=errors(404, 422))
async def get_item(
    item_id: Annotated[Id, Path()],
    services: ServicesDep,
    include_vector: Annotated[bool, Query(description="include the item vector")] = False,
) -> ItemOut:
    info = await services.items.get(item_id)
    return ItemOut(item_id=info.item_id, source=info.source, fields=info.fields, view_weights=info.view_weights,
                   created_at=info.created_at, bundle_version=services.bundle_version,
                   vector=info.vector.tolist() if include_vector else None)


@router.delete("/{item_id:path}", response_model=ItemDeleted, dependencies=[ApiKey], responses=errors(401, 404, 422))
async def delete_item(item_id: Annotated[Id, Path()], services: ServicesDep, key: IdempotencyKey) -> Response:
    """Withdraw a product: it stops being recommended at once."""
    once = idempotent(key, "DELETE", f"/items/{item_id}", {})
    if (replayed := await replay(services, once)) is not None:
        return replayed
    return as_response(await services.items.delete(item_id, once))


async def json_body(request: Request, model: type[Body]) -> Body:
    """The request's JSON body as `model`; 415 for another content type, 422 for invalid JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaType(f"send application/json, not {content_type or 'no Content-Type'}")
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise _invalid_body(exc) from exc


def base64_image(data: str) -> bytes:
    """The image bytes of a JSON body that sends them base64-encoded."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput(f"image_base64 is not valid base64: {exc}") from exc


async def _from_form(request: Request) -> tuple[str, dict[str, str], bytes]:
    form = parse_multipart(request.headers["content-type"], await request.body(), max_fields=MAX_FORM_PARTS)
    image = form.files.pop(IMAGE_FORM_FIELD, None)
    if image is None:
        raise BadInput(f"upload the image as the file field {IMAGE_FORM_FIELD!r}")
    if form.files:
        raise BadInput(f"only one file ({IMAGE_FORM_FIELD!r}) may be uploaded; {sorted(form.files)} must be text fields")
    fields = {key: value for key, value in form.fields.items() if key not in _RESERVED_FORM_FIELDS}
    try:
        body = ItemFields.model_validate({"item_id": form.fields.get("item_id"), "fields": fields})
    except ValidationError as exc:
        raise _invalid_body(exc) from exc
    return body.item_id, body.fields, image


def _invalid_body(exc: ValidationError) -> RequestValidationError:
    """FastAPI's 422 format; inputs are not echoed (they may be megabytes, or not UTF-8)."""
    errors = exc.errors(include_url=False, include_input=False)
    return RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in errors])


def _media_type(image: bytes) -> str:
    """The MIME type of image bytes the service stored (it decoded them when they came in)."""
    try:
        with Image.open(io.BytesIO(image)) as opened:
            return Image.MIME.get(opened.format or "", "application/octet-stream")
    except (OSError, ValueError):
        return "application/octet-stream"


def _check_fields(fields: Mapping[str, str], services: Services) -> None:
    columns = services.columns
    unknown = sorted(set(fields) - set(columns))
    if unknown:
        raise BadInput(f"unknown text field(s) {unknown}; this bundle reads {columns}")
    if not fields:
        raise BadInput(f"an item needs at least one text field of {columns}")
    empty = sorted(name for name, value in fields.items() if not value.strip())
    if empty:
        raise BadInput(f"text field(s) {empty} are empty; leave a field out when it has no value")
    limit = services.settings.max_text_chars
    long = {name: len(value) for name, value in fields.items() if len(value) > limit}
    if long:
        raise BadInput(f"text field(s) {long} are longer than {limit} characters; shorten them")
