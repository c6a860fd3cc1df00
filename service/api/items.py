"""POST /items (JSON or multipart), GET /items/{item_id}, DELETE /items/{item_id}."""

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.api.deps import ApiKey, ServicesDep
from service.api.idempotency import IdempotencyKey, as_response, idempotent, replay
from service.api.multipart import parse_multipart
from service.api.responses import errors
from service.api.schemas import Id, ItemCreated, ItemDeleted, ItemFields, ItemIn, ItemOut
from service.errors import BadInput, UnsupportedMediaType
from service.fetch import fetch_image
from service.state import Services

router = APIRouter(prefix="/items", tags=["items"])

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
        body = await _json_body(request)
        _check_fields(body.fields, services)
        item_id, fields, image_url = body.item_id, body.fields, body.image_url
        image = None if image_url is not None else _base64_image(body)
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


@router.get("/{item_id:path}", response_model=ItemOut, responses=errors(404, 422))
async def get_item(
    item_id: Annotated[Id, Path()],
    services: ServicesDep,
    include_vector: Annotated[bool, Query(description="include the item vector")] = False,
) -> ItemOut:
    info = await services.items.get(item_id)
    return ItemOut(item_id=info.item_id, source=info.source, fields=info.fields, created_at=info.created_at,
                   bundle_version=services.bundle_version,
                   vector=info.vector.tolist() if include_vector else None)


@router.delete("/{item_id:path}", response_model=ItemDeleted, dependencies=[ApiKey], responses=errors(401, 404, 422))
async def delete_item(item_id: Annotated[Id, Path()], services: ServicesDep, key: IdempotencyKey) -> Response:
    """Withdraw a product: it stops being recommended at once."""
    once = idempotent(key, "DELETE", f"/items/{item_id}", {})
    if (replayed := await replay(services, once)) is not None:
        return replayed
    return as_response(await services.items.delete(item_id, once))


async def _json_body(request: Request) -> ItemIn:
    try:
        return ItemIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise _invalid_body(exc) from exc


def _base64_image(body: ItemIn) -> bytes:
    """The image bytes of a JSON body that sends them base64-encoded."""
    try:
        return base64.b64decode(body.image_base64 or "", validate=True)
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


def _check_fields(fields: Mapping[str, str], services: Services) -> None:
    columns = services.bundle.manifest.views.columns
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
