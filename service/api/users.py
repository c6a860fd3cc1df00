"""GET /users/{user_id}/recommendations and POST /users/{user_id}/interactions."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic_core import to_json

from service.api.deps import ApiKey, ServicesDep
from service.api.responses import errors
from service.api.idempotency import IdempotencyKey, as_response, idempotent, replay
from service.api.schemas import Id, InteractionsIn, InteractionsRecorded, Recommendations
from service.popularity import MAX_K

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/{user_id}/recommendations", response_model=Recommendations, responses=errors(404, 422))
async def recommendations(
    user_id: Annotated[Id, Path()],
    services: ServicesDep,
    k: Annotated[int, Query(ge=1, le=MAX_K, description="how many items")] = 50,
) -> Response:
    """Top-k items by the model's score, without items the user has interacted with; an unknown
    user gets the most popular items (`fallback: true`)."""
    result = await services.recommendations.recommend(user_id, k)
    # The hot path: the body is built here from str and float, so it is serialised straight to
    # JSON (pydantic-core) instead of validated against `Recommendations` first (which only
    # documents it); that validation and the model objects were a tenth of the request's CPU.
    body = {
        "user_id": user_id,
        "items": [{"item_id": item_id, "score": score} for item_id, score in result.items],
        "bundle_version": services.bundle_version,
        "from_cache": result.from_cache,
        "fallback": result.fallback,
    }
    return Response(to_json(body), media_type="application/json")


@router.post("/{user_id}/interactions", status_code=201, response_model=InteractionsRecorded, dependencies=[ApiKey],
             responses=errors(401, 404, 422))
async def record_interactions(
    user_id: Annotated[Id, Path()], body: InteractionsIn, services: ServicesDep, key: IdempotencyKey
) -> Response:
    """Record interactions: the items leave the user's recommendations and the user's vector is
    updated by the fold-in rule (see `service/users.py`). An item named twice counts once."""
    once = idempotent(key, "POST", f"/users/{user_id}/interactions", body.model_dump())
    if (replayed := await replay(services, once)) is not None:
        return replayed
    return as_response(await services.interactions.record(user_id, body.item_ids, once))
