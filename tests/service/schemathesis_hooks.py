"""schemathesis hooks for `test_openapi_fuzz.py` (loaded through SCHEMATHESIS_HOOKS).

Generated from the schema alone, every `POST /items` carries random bytes for an image and
random text-field names, so every one would end in a 422. Half the time here a generated request
gets a real image (PNG or JPEG, a few sizes), text fields the bundle reads and a plain id instead,
so ingestion, 409 and `replace=true` are explored too; and ids known to the catalog stand in for
random ones on the other operations at times. The test passes the catalog's ids and the bundle's
text columns in environment variables.
"""

import base64
import io
import os
from typing import Any

import schemathesis
from hypothesis import strategies as st
from PIL import Image

ITEM_IDS = os.environ["FUZZ_ITEM_IDS"].split(",")
TEXT_COLUMNS = os.environ["FUZZ_TEXT_COLUMNS"].split(",")


def _image(size: tuple[int, int], colour: tuple[int, int, int], kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=kind)
    return buffer.getvalue()


IMAGES = [_image((48, 48), (200, 40, 40), "PNG"), _image((120, 64), (40, 190, 60), "JPEG"),
          _image((1, 1), (0, 0, 0), "PNG"), _image((300, 200), (40, 60, 210), "JPEG")]
TEXT = st.text(min_size=1, max_size=40).filter(str.strip)
FIELDS = st.dictionaries(st.sampled_from(TEXT_COLUMNS), TEXT, min_size=1)
PLAIN_ID = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)


def _with_real_image(case: Any, image: bytes, fields: dict[str, str], item_id: str) -> Any:
    if case.media_type == "multipart/form-data":
        case.body = {"item_id": item_id, "image": image, **fields}
    else:
        case.body = {"item_id": item_id, "fields": fields, "image_base64": base64.b64encode(image).decode()}
    return case


@schemathesis.hook("flatmap_case").apply_to(path="/items", method="POST")
def real_images(context: Any, case: Any) -> st.SearchStrategy:
    if case.media_type not in ("application/json", "multipart/form-data"):
        return st.just(case)
    real = st.builds(lambda image, fields, item_id: _with_real_image(case, image, fields, item_id),
                     st.sampled_from(IMAGES), FIELDS, st.one_of(PLAIN_ID, st.sampled_from(ITEM_IDS)))
    return st.one_of(st.just(case), real)


@schemathesis.hook("flatmap_path_parameters").apply_to(path_regex="^/items/")
def known_items(context: Any, parameters: dict[str, Any]) -> st.SearchStrategy:
    return st.one_of(st.just(parameters), st.sampled_from(ITEM_IDS).map(lambda item_id: {"item_id": item_id}))


@schemathesis.hook("flatmap_body").apply_to(path_regex="/interactions$")
def known_interactions(context: Any, body: Any) -> st.SearchStrategy:
    return st.one_of(st.just(body), st.lists(st.sampled_from(ITEM_IDS), min_size=1, max_size=5)
                     .map(lambda item_ids: {"item_ids": item_ids}))
