"""Check a real response against the service's own OpenAPI document."""

import re
from typing import Any

from jsonschema import Draft202012Validator


def operation(openapi: dict[str, Any], method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The documented path template that `path` (with its parameters filled in) matches, and its operation."""
    path = path.split("?")[0]
    for template, operations in openapi["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", ".+", template), path) and method.lower() in operations:
            return template, operations[method.lower()]
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def assert_documented(openapi: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    """`status` is listed for the operation and `body` (JSON) matches its schema."""
    template, documented = operation(openapi, method, path)
    responses = documented["responses"]
    assert str(status) in responses, f"{method} {template} answered {status}, which it does not document: {body}"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    Draft202012Validator({**schema, "components": openapi["components"]}).validate(body)
