"""GET /users, GET /users/{user_id}, GET /users/{user_id}/recommendations, POST /users/{user_id}/interactions."""

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic_core import to_json

from service.api.deps import ApiKey, HowMany, SelectionDep, ServicesDep
from service.api.responses import errors
from service.api.idempotency import IdempotencyKey, as_response, idempotent, replay
from service.api.schemas import Id, InteractionsIn, InteractionsRecorded, Recommendations, UserList, UserOut
from service.popularity import MAX_K

router = APIRouter(prefix="/users", tags=["users"])


HISTORY_SHOWN = 100


@router.get("", response_model=UserList, responses=errors(422))
async def list_users(
    services: ServicesDep, limit: Annotated[int, Query(ge=1, le=MAX_K, description="how many users")] = 20
) -> UserList:
    """Some users the model knows (the bundle's first), e.g. to pick one in the page."""
    return UserList(users=services.recommendations.users.some(limit))


@router.get("/{user_id}", response_model=UserOut, responses=errors(404, 422))
async def get_user(user_id: Annotated[Id, Path()], services: ServicesDep) -> UserOut:
    """A user's history (the items they interacted with) and whether the model knows them."""
    users = services.recommendations.users
    history = list(users.seen_item_ids(user_id))
    return UserOut(user_id=user_id, known=users.known(user_id), history=history[-HISTORY_SHOWN:],
                   interactions=len(history))


@router.get("/{user_id}/recommendations", response_model=Recommendations, responses=errors(404, 422))
async def recommendations(
    user_id: Annotated[Id, Path()],
    services: ServicesDep,
    selection: SelectionDep,
    k: HowMany = 50,
    explain: Annotated[bool, Query(description="add why each item: the user's items behind it, its view weights")]
    = False,
) -> Response:
    """Top-k items by the model's score, without items the user has interacted with, among the
    items that pass the filters; an unknown user gets the most popular ones (`fallback: true`).
    There are k items whenever k pass the filters."""
    result = await services.recommendations.recommend(user_id, k, selection, explain)
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
    if result.explanations is not None:
        for item, explanation in zip(body["items"], result.explanations, strict=True):
            item["explanation"] = explanation
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
