"""POST /search: items by a text, an image or both, in CLIP space (`service.search`)."""

from fastapi import APIRouter, Request

from service.api.deps import ServicesDep
from service.api.items import base64_image, json_body
from service.api.responses import errors
from service.api.schemas import SearchHit, SearchIn, SearchResults
from service.errors import BadInput
from service.selection import Selection

router = APIRouter(tags=["search"])


@router.post("/search", response_model=SearchResults, responses=errors(415, 422), openapi_extra={
    "requestBody": {"required": True, "content": {"application/json": {"schema": SearchIn.model_json_schema()}}}})
async def search(request: Request, services: ServicesDep) -> SearchResults:
    """The k items nearest the query: a text, an image (base64), or both, embedded by the
    bundle's CLIP encoders and compared with each item's image and fused text (the mean of the
    two cosines). With `user_id`, the user's model score is blended in (see the README)."""
    body = await json_body(request, SearchIn)
    selection = Selection.parse(body.filters, body.exclude, services.columns)
    limit = services.settings.max_text_chars
    if body.text is not None and len(body.text) > limit:
        raise BadInput(f"text is {len(body.text)} characters long; at most {limit} are searched, shorten it")
    image = None
    if body.image_base64 is not None:
        image = services.encoder.decode(base64_image(body.image_base64))
    users = services.recommendations.users
    user_vector = users.vector(body.user_id) if body.user_id is not None and users.known(body.user_id) else None
    hits = await services.search.search(body.text, image, body.k, selection, user_vector, body.user_weight)
    return SearchResults(
        items=[SearchHit(item_id=hit.item_id, score=hit.score, clip_score=hit.clip_score, user_score=hit.user_score)
               for hit in hits],
        personalized=user_vector is not None, bundle_version=services.bundle_version)
