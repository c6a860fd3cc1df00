"""Error responses: every error the app answers has one body, `Error`, and every operation's
OpenAPI entry lists the errors it can answer.

The service's own checks raise `ServiceError`s (`detail`, plus `unknown_item_ids` where it
applies); a request that does not match the declared parameters or body is a FastAPI
`RequestValidationError`, turned into the same body with `errors` listing each invalid part
(FastAPI's default would make `detail` an array). FastAPI's own HTTP errors (404 for an unknown
path, 400 for a JSON body that is not UTF-8) already send `{"detail": "..."}`.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.api.schemas import Error, FieldError
from service.errors import ServiceError

DESCRIPTIONS = {
    400: "a malformed request: a Content-Length that is not a number, a JSON body that is not UTF-8",
    401: "the X-API-Key header is missing or wrong",
    404: "no such item (or, for an id with a '/', no such path)",
    408: "the request headers did not arrive within CLIPER_TIMEOUT_HEADER_S (the connection is closed)",
    409: "an item with this id exists; send replace=true to replace it",
    413: "the request body is over CLIPER_MAX_BODY_BYTES (the image at image_url too)",
    415: "the body is neither application/json nor multipart/form-data",
    422: "invalid input: a parameter or body that does not match this document, an image that cannot be "
         "decoded or is too large, empty or unknown text fields, unknown items",
    431: "the request headers are over CLIPER_MAX_HEADER_BYTES (the connection is closed)",
}
# Every operation: the body limit and the server's limits on connections hold for all of them.
COMMON = (400, 408, 413, 431)
OVERLOADED = {
    "description": "the worker is over CLIPER_MAX_CONCURRENCY connections or requests (uvicorn's plain-text "
                   "answer; retry later)",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of an operation: `statuses` and the common errors, each with the `Error`
    body, and the 503 of an overloaded worker."""
    documented: dict[int | str, dict[str, Any]] = {
        status: {"model": Error, "description": DESCRIPTIONS[status]} for status in sorted({*statuses, *COMMON})
    }
    documented[503] = OVERLOADED
    return documented


def error_body(detail: str, **extra: Any) -> dict[str, Any]:
    """An `Error` as JSON, without the fields that do not apply. Not validated here: a field that
    `Error` lacks would fail the tests, not a client's request."""
    return {"detail": detail, **{name: value for name, value in extra.items() if value is not None}}


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse(error_body(exc.message, **exc.extra), status_code=exc.status_code)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with a one-line summary in `detail` and each invalid part in `errors`; inputs are not
    echoed (they may be megabytes, or not UTF-8)."""
    assert isinstance(exc, RequestValidationError)
    parts = [_field_error(error) for error in exc.errors()]
    summary = "; ".join(f"{' '.join(map(str, part.loc))}: {part.msg}" for part in parts)
    return JSONResponse(error_body(summary or "the request is invalid", errors=[part.model_dump() for part in parts]),
                        status_code=422)


def _field_error(error: dict[str, Any]) -> FieldError:
    """pydantic's error dict, without `input` and `ctx`; a JSON syntax error says where and what."""
    message = error.get("msg", "invalid")
    if error.get("type") == "json_invalid" and "error" in error.get("ctx", {}):
        message = f"{message}: {error['ctx']['error']}"
    return FieldError(loc=[part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
                      msg=message, type=str(error.get("type", "invalid")))


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
