"""Errors a client can fix; the app turns each into a JSON 4xx with its message."""

from typing import Any


class ServiceError(Exception):
    """Base: `status_code` and a message that says what to fix, plus optional extra JSON fields."""

    status_code = 400

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class BadInput(ServiceError):
    status_code = 422


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class PayloadTooLarge(ServiceError):
    status_code = 413


class Unauthorized(ServiceError):
    status_code = 401


class UnsupportedMediaType(ServiceError):
    status_code = 415
