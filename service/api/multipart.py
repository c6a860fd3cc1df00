"""multipart/form-data bodies, parsed with python-multipart so text fields keep their raw bytes.

Starlette's form parser decodes a text field that is not valid UTF-8 as Latin-1 without saying
so, which would store mojibake; here every field name and text value must be UTF-8, and a
field that is not gets a 422 naming it.
"""

import io
from dataclasses import dataclass

from python_multipart import parse_form
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import Field, File

from service.errors import BadInput


@dataclass
class Form:
    fields: dict[str, str]
    files: dict[str, bytes]


def parse_multipart(content_type: str, body: bytes, max_fields: int) -> Form:
    """The text fields (UTF-8 decoded) and the files of a multipart body; `BadInput` when it
    cannot be parsed, has more than `max_fields` parts, or a text field is not UTF-8."""
    raw_fields: list[tuple[bytes, bytes]] = []
    files: dict[str, bytes] = {}

    def on_field(field: Field) -> None:
        raw_fields.append((field.field_name or b"", field.value or b""))

    def on_file(file: File) -> None:
        file.file_object.seek(0)
        files[_utf8(file.field_name or b"", "a form field name")] = file.file_object.read()

    try:
        parse_form({"Content-Type": content_type.encode("latin-1")}, io.BytesIO(body), on_field, on_file)
    except (FormParserError, ValueError) as exc:
        raise BadInput(f"the multipart body cannot be parsed: {exc}") from exc
    if len(raw_fields) + len(files) > max_fields:
        raise BadInput(f"the form has {len(raw_fields) + len(files)} parts; at most {max_fields} are accepted")
    fields = {}
    for raw_name, raw_value in raw_fields:
        name = _utf8(raw_name, "a form field name")
        fields[name] = _utf8(raw_value, f"form field {name!r}")
    return Form(fields, files)


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start}); send UTF-8 text") from exc
